package main

import (
	"cmp"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"

	anthropicsdk "github.com/anthropics/anthropic-sdk-go/v2"
	anthropicopt "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/option"
	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/provider/anthropic"
	oaiprov "github.com/batchctl/batchctl/provider/openai"
)

// apiOptions are the flags and environment of every command that calls a batch API: --api-key and --base-url for
// OpenAI, and the environment of the other providers (AZURE_OPENAI_*, ANTHROPIC_*).
type apiOptions struct {
	g       *globalOptions
	apiKey  string
	baseURL string
}

// DefaultAzureAPIVersion is the api-version of Azure's api-version paths when OPENAI_API_VERSION is unset.
const DefaultAzureAPIVersion = "2025-04-01-preview"

// DefaultAnthropicBaseURL is Anthropic's API when ANTHROPIC_BASE_URL is unset.
const DefaultAnthropicBaseURL = "https://api.anthropic.com"

// addAPIFlags registers --api-key and --base-url, with OPENAI_API_KEY and OPENAI_BASE_URL as fallbacks.
func addAPIFlags(cmd *cobra.Command, g *globalOptions) *apiOptions {
	o := &apiOptions{g: g}
	cmd.Flags().StringVar(&o.apiKey, "api-key", "", "OpenAI API key (default from env OPENAI_API_KEY; prefer the env var: flags show in ps)")
	cmd.Flags().StringVar(&o.baseURL, "base-url", g.getenv("OPENAI_BASE_URL"), "API base URL, e.g. http://127.0.0.1:8089/v1 for batchctl emulator (env OPENAI_BASE_URL)")
	// The env fallback is read at run time, not as the flag's default, so --help never prints the key.
	cmd.PreRunE = chainPreRun(cmd.PreRunE, func(*cobra.Command, []string) error {
		if o.apiKey == "" {
			o.apiKey = g.getenv("OPENAI_API_KEY")
		}
		return nil
	})
	return o
}

// client builds the OpenAI client; the SDK retries 408/409/429/5xx with backoff and honours Retry-After.
func (o *apiOptions) client(extra ...option.RequestOption) (openai.Client, error) {
	if o.apiKey == "" {
		return openai.Client{}, usageError{errors.New("no API key: set OPENAI_API_KEY (any non-empty value works with batchctl emulator)")}
	}
	opts := []option.RequestOption{option.WithAPIKey(o.apiKey)}
	if o.baseURL != "" {
		opts = append(opts, option.WithBaseURL(o.baseURL))
	}
	return openai.NewClient(append(opts, extra...)...), nil
}

// account is where a provider's calls go and whose key they carry: the base URL, and batchapi.Account's
// fingerprint of it and the key.
type account struct{ base, fingerprint string }

// azure builds the Azure OpenAI client from AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY and OPENAI_API_VERSION.
// An endpoint whose path is /openai/v1 takes the v1 paths (no api-version); any other takes the api-version paths
// through openai-go's azure package.
func (o *apiOptions) azure() (openai.Client, account, error) {
	endpoint, key := strings.TrimRight(o.g.getenv("AZURE_OPENAI_ENDPOINT"), "/"), o.g.getenv("AZURE_OPENAI_API_KEY")
	if endpoint == "" || key == "" {
		return openai.Client{}, account{}, usageError{errors.New("provider azure: set AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY")}
	}
	acct := account{batchapi.Endpoint(endpoint), batchapi.Account(endpoint, key)}
	if strings.HasSuffix(endpoint, "/openai/v1") {
		// The v1 paths take the key in api-key, and no api-version. The environment's OpenAI key and base URL must
		// not reach Azure: the middleware drops any Authorization header.
		return openai.NewClient(option.WithBaseURL(endpoint+"/"), option.WithHeader("api-key", key),
			option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
				req.Header.Del("Authorization")
				return next(req)
			})), acct, nil
	}
	opts := []option.RequestOption{
		azure.WithEndpoint(endpoint, cmp.Or(o.g.getenv("OPENAI_API_VERSION"), DefaultAzureAPIVersion)),
		azure.WithAPIKey(key),
	}
	if loopbackHTTP(endpoint) {
		opts = append(opts, azure.WithUnsafeAllowHTTP()) // the emulator; openai-go sends Azure keys over TLS only otherwise
	}
	return openai.NewClient(opts...), acct, nil
}

// loopbackHTTP reports a plain-HTTP URL on this machine, such as batchctl emulator's.
func loopbackHTTP(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

// anthropic builds the Anthropic provider from ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL.
func (o *apiOptions) anthropic(log *slog.Logger) (*anthropic.Provider, account, error) {
	key, base := o.g.getenv("ANTHROPIC_API_KEY"), cmp.Or(o.g.getenv("ANTHROPIC_BASE_URL"), DefaultAnthropicBaseURL)
	if key == "" {
		return nil, account{}, usageError{errors.New("provider anthropic: set ANTHROPIC_API_KEY")}
	}
	// Only what is configured here: the SDK's environment defaults (profiles, federation) stay out.
	client := anthropicsdk.NewClient(anthropicopt.WithoutEnvironmentDefaults(), anthropicopt.WithAPIKey(key),
		anthropicopt.WithBaseURL(base))
	return &anthropic.Provider{API: &client, Logger: log}, account{batchapi.Endpoint(base), batchapi.Account(base, key)}, nil
}

// providers builds every provider whose credentials are configured; a command that meets a batch of another says
// which credentials it lacks. None at all is a usage error.
func (o *apiOptions) providers(log *slog.Logger) (provider.Set, error) {
	set := provider.Set{}
	if o.apiKey != "" {
		c, err := o.client()
		if err != nil {
			return nil, err
		}
		set[provider.OpenAI] = oaiprov.New(&batchapi.Client{API: &c, Logger: log})
	}
	if o.g.getenv("AZURE_OPENAI_ENDPOINT") != "" || o.g.getenv("AZURE_OPENAI_API_KEY") != "" {
		c, _, err := o.azure()
		if err != nil {
			return nil, err
		}
		set[provider.Azure] = oaiprov.NewAzure(&batchapi.Client{API: &c, Logger: log})
	}
	if o.g.getenv("ANTHROPIC_API_KEY") != "" {
		p, _, err := o.anthropic(log)
		if err != nil {
			return nil, err
		}
		set[provider.Anthropic] = p
	}
	if len(set) == 0 {
		return nil, usageError{errors.New("no API key: set OPENAI_API_KEY, AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY, or ANTHROPIC_API_KEY (any non-empty value works with batchctl emulator)")}
	}
	return set, nil
}

func chainPreRun(first, then func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if first != nil {
			if err := first(cmd, args); err != nil {
				return err
			}
		}
		return then(cmd, args)
	}
}

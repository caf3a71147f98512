package main

import (
	"errors"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/spf13/cobra"
)

// apiOptions are the flags of every command that calls the OpenAI API.
type apiOptions struct {
	apiKey  string
	baseURL string
}

// addAPIFlags registers --api-key and --base-url, with OPENAI_API_KEY and OPENAI_BASE_URL as fallbacks.
func addAPIFlags(cmd *cobra.Command, g *globalOptions) *apiOptions {
	o := &apiOptions{}
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

// client builds the API client; the SDK retries 408/409/429/5xx with backoff and honours Retry-After.
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

package batchapi

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strings"
)

// DefaultBaseURL is the API's base URL when none is configured (openai-go's default).
const DefaultBaseURL = "https://api.openai.com/v1/"

// Endpoint is the base URL in a canonical form, without credentials: what the user configured, for display and
// comparison.
func Endpoint(baseURL string) string {
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return strings.TrimRight(baseURL, "/")
	}
	u.User = nil
	u.Host = strings.ToLower(u.Host)
	u.Scheme = strings.ToLower(u.Scheme)
	u.RawQuery, u.Fragment = "", ""
	return strings.TrimRight(u.String(), "/")
}

// Account fingerprints the API endpoint and the account behind a key: a 16-hex-digit digest of both, from which
// the key cannot be recovered. Intents recorded under one account are never taken for another's: a batch created
// at one endpoint or with one project's key does not exist for another.
func Account(baseURL, apiKey string) string {
	sum := sha256.Sum256([]byte("batchctl account v1\x00" + Endpoint(baseURL) + "\x00" + apiKey))
	return hex.EncodeToString(sum[:8])
}

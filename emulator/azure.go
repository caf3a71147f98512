package emulator

// Azure OpenAI global batch, served on the same port as OpenAI's API and over the same files and batches.
//
// Azure speaks OpenAI's Files and Batches API with its own paths, authentication, error shape and input-file
// rules. The handlers are OpenAI's; a request that came in through an Azure path carries a mark in its context
// (see isAzure) where the two services differ, and a batch created through one keeps Azure's rules for life.

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

const (
	// DefaultAzureMaxRequestsPerFile is Azure OpenAI's cap on the requests of a global batch input file.
	DefaultAzureMaxRequestsPerFile = 100_000

	// azureFirstBatchAPIVersion is the first api-version that has the batch API; older ones answer 404.
	azureFirstBatchAPIVersion = "2024-07-01"
	// Azure's bounds on an upload's expires_after: 14 to 30 days.
	azureMinExpiresAfter = 1_209_600
	azureMaxExpiresAfter = 2_592_000
)

// Validation error codes of Azure OpenAI, written to a failed Azure batch's errors.data[].code. Azure renames some
// of OpenAI's codes; the others (invalid_json_line, duplicate_custom_id, empty_file, file_too_large,
// token_limit_exceeded) keep their names.
const (
	CodeModelMismatch  = "model_mismatch"  // OpenAI's mismatched_model
	CodeURLMismatch    = "url_mismatch"    // OpenAI's invalid_url
	CodeTooManyTasks   = "too_many_tasks"  // OpenAI's too_many_requests_in_file
	CodeInvalidRequest = "invalid_request" // a line whose schema is wrong: a missing or mistyped field, a method other than POST
	CodeModelNotFound  = "model_not_found" // the model names no deployment (see AzureOptions.Deployments)
)

// azureCodes renames OpenAI's validation codes to Azure's.
var azureCodes = map[string]string{
	CodeMismatchedModel:          CodeModelMismatch,
	CodeInvalidURL:               CodeURLMismatch,
	CodeTooManyRequests:          CodeTooManyTasks,
	CodeMissingRequiredParameter: CodeInvalidRequest,
	CodeInvalidType:              CodeInvalidRequest,
	CodeInvalidMethod:            CodeInvalidRequest,
}

// azureEndpoints are the batch endpoints Azure takes, in both the spelling of its docs and OpenAI's, each mapped to
// OpenAI's spelling, which decides the request and answer shapes.
var azureEndpoints = map[string]string{
	"/chat/completions": "/v1/chat/completions", "/v1/chat/completions": "/v1/chat/completions",
	"/embeddings": "/v1/embeddings", "/v1/embeddings": "/v1/embeddings",
	"/responses": "/v1/responses", "/v1/responses": "/v1/responses",
}

// AzureOptions configure the Azure OpenAI side of a [Server]. The zero value takes Azure's limits and any
// deployment name.
type AzureOptions struct {
	// MaxRequestsPerFile caps the requests of an Azure batch input file; zero means DefaultAzureMaxRequestsPerFile.
	// It is apart from Options.MaxRequestsPerFile because the two services' caps differ.
	MaxRequestsPerFile int
	// Deployments are the Global-Batch deployment names that exist: a batch whose model is another name fails with
	// model_not_found. Empty means every name is a deployment.
	Deployments []string
}

// azureRoutes mounts Azure's batch API on m: the api-version paths under /openai, which need ?api-version=, and
// the v1 paths under /openai/v1, which do not. Anything else under /openai answers Azure's 404.
func (s *Server) azureRoutes(m *http.ServeMux) {
	for _, p := range []struct {
		prefix    string
		versioned bool
	}{{"/openai", true}, {"/openai/v1", false}} {
		h := func(rt route, f http.HandlerFunc) http.Handler { return s.azureRoute(p.versioned, rt, f) }
		m.Handle("POST "+p.prefix+"/files", h(routeFileUpload, s.handleFileUpload))
		m.Handle("GET "+p.prefix+"/files", h(routeFileList, s.handleFileList))
		m.Handle("GET "+p.prefix+"/files/{id}", h(routeFileGet, s.handleFileGet))
		m.Handle("DELETE "+p.prefix+"/files/{id}", h(routeFileDelete, s.handleFileDelete))
		m.Handle("GET "+p.prefix+"/files/{id}/content", h(routeFileContent, s.handleFileContent))
		m.Handle("POST "+p.prefix+"/batches", h(routeBatchCreate, s.handleBatchCreate))
		m.Handle("GET "+p.prefix+"/batches", h(routeBatchList, s.handleBatchList))
		m.Handle("GET "+p.prefix+"/batches/{id}", h(routeBatchGet, s.handleBatchGet))
		m.Handle("POST "+p.prefix+"/batches/{id}/cancel", h(routeBatchCancel, s.handleBatchCancel))
	}
	m.HandleFunc("/openai/", func(w http.ResponseWriter, _ *http.Request) {
		writeAzureError(w, http.StatusNotFound, "404", "Resource not found")
	})
}

// azureRoute is route for the Azure paths: counting, Azure's authentication, the api-version check of the
// versioned paths, injected faults.
func (s *Server) azureRoute(versioned bool, rt route, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.count(func(st *Stats) { st.addCall(rt) })
		if !s.authorizeAzure(w, r) {
			return
		}
		if versioned && !checkAPIVersion(w, r) {
			return
		}
		s.serveWithFaults(rt, w, r.WithContext(context.WithValue(r.Context(), azureRequest{}, true)), h)
	})
}

// azureRequest marks the context of a request that came in through an Azure path.
type azureRequest struct{}

// isAzure reports whether r came in through an Azure path, where the shared handlers apply Azure's rules.
func isAzure(r *http.Request) bool {
	azure, _ := r.Context().Value(azureRequest{}).(bool)
	return azure
}

// authorizeAzure takes the key from the api-key header, or else a bearer token (Entra ID), and holds it to
// Options.APIKey as the OpenAI side does: when that is empty, any non-empty key passes.
func (s *Server) authorizeAzure(w http.ResponseWriter, r *http.Request) bool {
	key := strings.TrimSpace(r.Header.Get("Api-Key"))
	if token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && key == "" {
		key = strings.TrimSpace(token)
	}
	switch {
	case key == "":
		s.count(func(st *Stats) { st.Unauthorized++ })
		writeAzureError(w, http.StatusUnauthorized, "401",
			"Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.")
		return false
	case s.opts.APIKey != "" && key != s.opts.APIKey:
		s.count(func(st *Stats) { st.Unauthorized++ })
		writeAzureError(w, http.StatusUnauthorized, "401",
			"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.")
		return false
	}
	return true
}

var apiVersionPattern = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(-preview)?$`)

// checkAPIVersion answers as Azure does when the api-version query parameter is missing or names a version
// without the batch API (404 Resource not found) or is not a version at all (400); it writes the error itself.
func checkAPIVersion(w http.ResponseWriter, r *http.Request) bool {
	v := r.URL.Query().Get("api-version")
	switch {
	case v == "":
		writeAzureError(w, http.StatusNotFound, "404", "Resource not found")
	case !apiVersionPattern.MatchString(v):
		writeAzureError(w, http.StatusBadRequest, "BadRequest", "API version not supported")
	case v[:len(azureFirstBatchAPIVersion)] < azureFirstBatchAPIVersion:
		writeAzureError(w, http.StatusNotFound, "404", "Resource not found")
	default:
		return true
	}
	return false
}

// azureError is the error object of Azure's gateway: a code (often the status as a string) and a message.
type azureError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeAzureError writes Azure's gateway error shape: {"error":{"code","message"}}.
func writeAzureError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]azureError{"error": {Code: code, Message: msg}})
}

// azureEndpointError returns the message of a batch create whose endpoint Azure does not take, or "".
func azureEndpointError(endpoint string) string {
	if _, ok := azureEndpoints[endpoint]; ok {
		return ""
	}
	return fmt.Sprintf("Invalid value: '%s'. Supported values are: '/chat/completions', '/embeddings' and '/responses'.", endpoint)
}

// apiEndpoint is the batch's endpoint in OpenAI's /v1 spelling, which decides the request and answer shapes. An
// Azure batch keeps the spelling it was created with for its batch object.
func (b *batch) apiEndpoint() string {
	if b.azure {
		return azureEndpoints[b.Endpoint]
	}
	return b.Endpoint
}

// validateAzureInput applies Azure's rules to an Azure batch's input file: every line's url names the batch's
// endpoint with or without /v1, one deployment for the whole file, Azure's cap on requests and Azure's codes.
func (s *Server) validateAzureInput(b *batch, input fileMeta) (validation, error) {
	api := b.apiEndpoint()
	short := strings.TrimPrefix(api, "/v1")
	urls := []string{short, api}
	if b.Endpoint == api {
		urls = []string{api, short}
	}
	maxRequests := s.opts.Azure.MaxRequestsPerFile
	if maxRequests <= 0 {
		maxRequests = DefaultAzureMaxRequestsPerFile
	}
	v, err := s.validateFile(input.path, b.idsPath, input.Bytes,
		inputRules{endpoint: api, lineURLs: urls, maxRequests: maxRequests})
	for i, e := range v.Errors {
		if code, ok := azureCodes[e.Code]; ok {
			v.Errors[i].Code = code
		}
	}
	if deployments := s.opts.Azure.Deployments; v.Model != "" && len(deployments) > 0 && !slices.Contains(deployments, v.Model) {
		v.Errors = append(v.Errors, newBatchError(CodeModelNotFound, fmt.Sprintf(
			"The model deployment '%s' was not found. Please ensure the 'model' of every request names a Global-Batch deployment.", v.Model),
			"body.model", 0))
	}
	return v, err
}

package reliability_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
	"github.com/batchctl/batchctl/submit"
)

// api is one batch API as the suite drives it: the environment that points batchctl at it, the paths of the calls
// a kill is aimed at, and the model of its built-in requests. The emulator serves all three on one port; OpenAI and
// Azure share its files and batches, Anthropic has message batches of its own.
type api struct {
	name string // provider.OpenAI, provider.Azure or provider.Anthropic
	// uploadPath is the path of a file upload, "" for an API that takes the requests inline in the create;
	// createPath is the path of a batch create.
	uploadPath, createPath string
	model                  string
}

var (
	openAIAPI    = api{name: provider.OpenAI, uploadPath: "/v1/files", createPath: "/v1/batches", model: "gpt-4o-mini"}
	azureAPI     = api{name: provider.Azure, uploadPath: "/openai/files", createPath: "/openai/batches", model: "gpt-4o-mini"}
	anthropicAPI = api{name: provider.Anthropic, createPath: "/v1/messages/batches", model: "claude-haiku-4-5"}

	// apis are the APIs the provider-aware parts run against, in the order their runs are dealt out.
	apis = []api{openAIAPI, azureAPI, anthropicAPI}
)

// inline reports an API without file uploads: the requests go in the create call.
func (a api) inline() bool { return a.uploadPath == "" }

// vars is batchctl's environment for the API at the emulator's root URL, with key: the API's own variables and
// BATCHCTL_PROVIDER, and no other provider's credentials, so a poller meets this API only.
func (a api) vars(root, key string) map[string]string {
	v := map[string]string{"BATCHCTL_PROVIDER": a.name}
	switch a.name {
	case provider.Azure:
		// The api-version paths (/openai/files?api-version=...) under the emulator's root.
		v["AZURE_OPENAI_ENDPOINT"], v["AZURE_OPENAI_API_KEY"] = root, key
	case provider.Anthropic:
		v["ANTHROPIC_BASE_URL"], v["ANTHROPIC_API_KEY"] = root, key
	default:
		v["OPENAI_BASE_URL"], v["OPENAI_API_KEY"] = root+"/v1", key
	}
	return v
}

// submitArgs are the arguments of `batchctl submit` of file in batches of per requests, in the built-in request
// form of the env's API (Anthropic requires a cap on each answer), with extra flags before the file.
func (e *env) submitArgs(file string, per int, extra ...string) []string {
	args := []string{"submit", "--model", e.api.model, "--id-field", "id", "--max-requests", strconv.Itoa(per)}
	if e.api.name == provider.Anthropic {
		args = append(args, "--max-output-tokens", "64")
	}
	return append(append(args, extra...), file)
}

// The emulator's counters of the env's API.

// createCalls counts batch create calls, those answered by an injected fault included.
func (e *env) createCalls() int {
	s := e.emu.Stats()
	if e.api.inline() {
		return s.Anthropic.BatchCreates
	}
	return s.BatchCreates
}

// uploads counts file uploads; an inline API has none.
func (e *env) uploads() int { return e.emu.Stats().FileUploads }

// statusCalls counts the calls that read a batch's status: gets and lists.
func (e *env) statusCalls() int {
	s := e.emu.Stats()
	if e.api.inline() {
		return s.Anthropic.BatchGets + s.Anthropic.BatchLists
	}
	return s.BatchGets + s.BatchLists
}

// downloads counts result downloads: output and error file contents, or message batch results.
func (e *env) downloads() int {
	s := e.emu.Stats()
	if e.api.inline() {
		return s.Anthropic.ResultDownloads
	}
	return s.ContentDownloads
}

// made counts the batches that came to exist at the API, whether or not their creator heard of them.
func (e *env) made() int {
	if e.api.inline() {
		return e.emu.Stats().Anthropic.BatchesCreated
	}
	return len(e.emu.Batches())
}

// allEnded reports whether every batch has ended at the API.
func (e *env) allEnded() bool {
	if e.api.inline() {
		for _, b := range e.emu.MessageBatches() {
			if b.ProcessingStatus != emulator.ProcessingEnded {
				return false
			}
		}
		return true
	}
	for _, b := range e.emu.Batches() {
		if !store.IsTerminal(b.Status) {
			return false
		}
	}
	return true
}

// apiBatch is the emulator's record of one batch, whichever API holds it.
type apiBatch struct {
	id string
	// content identifies the batch file the batch was made from, so the same file created twice shows: the spool
	// sha256 batchctl sends as metadata, or, for Anthropic, whose batches carry none, the custom_ids it holds.
	content  string
	metadata map[string]string // nil for Anthropic
	// requests are the requests in input order: the custom_id the API got and the record each was made from.
	requests []apiRequest
}

// apiRequest is one request as the API received it.
type apiRequest struct {
	apiID  string // the custom_id sent to the API
	record string // the id of the input record it was made from
}

// submitted reads every batch the emulator holds, once validated (OpenAI, Azure) so their requests are known.
func (e *env) submitted(t *testing.T) []apiBatch {
	t.Helper()
	var out []apiBatch
	if e.api.inline() {
		for _, b := range e.emu.MessageBatches() {
			reqs := messageRequests(t, b)
			content := ""
			for _, r := range reqs {
				content += r.record + "\n"
			}
			out = append(out, apiBatch{id: b.ID, content: content, requests: reqs})
		}
		return out
	}
	for _, b := range waitValidated(t, e.emu) {
		ab := apiBatch{id: b.ID, content: b.Metadata[submit.MetaSpoolSHA256], metadata: b.Metadata}
		for _, id := range b.CustomIDs {
			// OpenAI and Azure take any custom_id: batchctl sends the record's own.
			ab.requests = append(ab.requests, apiRequest{apiID: id, record: id})
		}
		out = append(out, ab)
	}
	return out
}

// messageRequests reads a message batch's requests from the emulator's requests file: the custom_id each was sent
// under, and the record it was made from, told by the record's text in the prompt (see recordOfText). A custom_id
// must be the record's own or r<line>, the only renaming batchctl does.
func messageRequests(t *testing.T, b emulator.MessageBatchRecord) []apiRequest {
	t.Helper()
	f, err := os.Open(filepath.Clean(b.RequestsPath))
	require.NoError(t, err, "requests of message batch %s", b.ID)
	defer f.Close()
	var out []apiRequest
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var l struct {
			CustomID string `json:"custom_id"`
			Params   struct {
				Messages []struct {
					Content string `json:"content"`
				} `json:"messages"`
			} `json:"params"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), "request of message batch %s", b.ID)
		require.Len(t, l.Params.Messages, 1, "request %s of message batch %s", l.CustomID, b.ID)
		record, ok := recordOfText(l.Params.Messages[0].Content)
		require.True(t, ok, "request %s of message batch %s is made from a record of the test: %q", l.CustomID, b.ID,
			l.Params.Messages[0].Content)
		line := fmt.Sprintf("r%d", len(out)+1)
		require.Contains(t, []string{record, line}, l.CustomID, "message batch %s sends record %s as its own ID or its line", b.ID, record)
		out = append(out, apiRequest{apiID: l.CustomID, record: record})
	}
	require.NoError(t, sc.Err())
	require.EqualValues(t, b.Requests, len(out), "message batch %s holds its requests", b.ID)
	return out
}

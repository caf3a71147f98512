package emulator_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/azure"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

const (
	azureKey        = "azure-test-key-0123456789"
	azureAPIVersion = "2025-04-01-preview"
	deployment      = "gpt-4o-mini-batch"
	azureChat       = openai.BatchNewParamsEndpoint("/chat/completions")
)

// azureEnv is one emulator seen through three clients that share its files and batches: OpenAI's, Azure's
// api-version paths (openai-go's azure package, as batchctl's users call Azure) and Azure's v1 paths (a plain
// client with the api-key header).
type azureEnv struct {
	srv                   *emulator.Server
	url                   string
	openAI, versioned, v1 *env
}

func newAzureEnv(t *testing.T, opts emulator.Options) *azureEnv {
	t.Helper()
	opts.APIKey = azureKey
	e := newEnv(t, opts, option.WithAPIKey(azureKey))
	versioned := openai.NewClient(azure.WithEndpoint(e.http.URL, azureAPIVersion), azure.WithAPIKey(azureKey),
		azure.WithUnsafeAllowHTTP(), option.WithMaxRetries(0))
	v1 := openai.NewClient(option.WithBaseURL(e.http.URL+"/openai/v1/"), option.WithHeader("api-key", azureKey),
		option.WithMaxRetries(0))
	return &azureEnv{
		srv: e.srv, url: e.http.URL, openAI: e,
		versioned: &env{srv: e.srv, http: e.http, client: versioned},
		v1:        &env{srv: e.srv, http: e.http, client: v1},
	}
}

// azureLines is a chat input file of n requests (custom_ids req-0…) for model, each line's url set to url.
func azureLines(n int, model, url string) []byte {
	return bytes.ReplaceAll(chatLines(n, model), []byte(`"url":"/v1/chat/completions"`), []byte(`"url":"`+url+`"`))
}

// TestAzureBatchLifecycle runs a batch through both Azure path styles with the real SDK: upload, create, poll,
// download. The answers have OpenAI's shapes, the error file of a clean batch exists and is empty, and nothing
// Azure creates expires by default.
func TestAzureBatchLifecycle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		client  func(*azureEnv) *env
		lineURL string
	}{
		{"api-version paths", func(a *azureEnv) *env { return a.versioned }, "/chat/completions"},
		{"v1 paths", func(a *azureEnv) *env { return a.v1 }, "/v1/chat/completions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := newAzureEnv(t, emulator.Options{})
			e := tt.client(a)
			ctx := t.Context()
			const n = 30

			in, err := e.client.Files.New(ctx, openai.FileNewParams{
				File:    openai.File(bytes.NewReader(azureLines(n, deployment, tt.lineURL)), "input.jsonl", "application/jsonl"),
				Purpose: openai.FilePurposeBatch,
			})
			require.NoError(t, err)
			require.False(t, in.JSON.ExpiresAt.Valid(), "an Azure input file has no default expiry: %s", in.RawJSON())

			b := e.create(t, in.ID, azureChat)
			require.Equal(t, openai.BatchStatusValidating, b.Status)
			require.Equal(t, "/chat/completions", b.Endpoint, "the endpoint as Azure spells it")
			requireBatchShape(t, b.RawJSON())

			b = e.wait(t, b.ID, openai.BatchStatusCompleted, openai.BatchStatusFailed)
			require.Equal(t, openai.BatchStatusCompleted, b.Status, "%+v", b.Errors)
			requireBatchShape(t, b.RawJSON())
			require.Equal(t, deployment, b.Model)
			counts := b.RequestCounts
			require.Equal(t, [3]int64{n, n, 0}, [3]int64{counts.Total, counts.Completed, counts.Failed})

			lines := e.download(t, b.OutputFileID)
			require.Len(t, lines, n, "one output line per request")
			want := make([]string, n)
			for i := range want {
				want[i] = fmt.Sprintf("req-%d", i)
			}
			require.ElementsMatch(t, want, customIDs(lines))
			for _, l := range lines {
				require.True(t, strings.HasPrefix(l.ID, "batch_req_"), l.ID)
				require.Nil(t, l.Error)
				require.Equal(t, http.StatusOK, l.Response.StatusCode)
				var cc openai.ChatCompletion
				require.NoError(t, json.Unmarshal(l.Response.Body, &cc))
				require.Equal(t, "chat.completion", string(cc.Object))
				require.Equal(t, deployment, cc.Model)
				i := strings.TrimPrefix(l.CustomID, "req-")
				require.Equal(t, emulator.AnswerText("review number "+i+" is great"), cc.Choices[0].Message.Content)
			}

			require.True(t, b.JSON.ErrorFileID.Valid(), "Azure gives a clean batch an error file")
			errFile, err := e.client.Files.Get(ctx, b.ErrorFileID)
			require.NoError(t, err)
			require.Zero(t, errFile.Bytes)
			require.Equal(t, openai.FileObjectPurposeBatchOutput, errFile.Purpose)
			resp, err := e.client.Files.Content(ctx, b.ErrorFileID)
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, resp.Body.Close())
			require.NoError(t, err)
			require.Empty(t, body)

			for _, id := range []string{in.ID, b.OutputFileID, b.ErrorFileID} {
				rec, ok := a.srv.File(id)
				require.True(t, ok)
				require.Zero(t, rec.ExpiresAt, "file %s expires", id)
			}

			// One store: the OpenAI side sees the Azure batch.
			same, err := a.openAI.client.Batches.Get(ctx, b.ID)
			require.NoError(t, err)
			require.Equal(t, b.OutputFileID, same.OutputFileID)

			st := a.srv.Stats()
			require.Equal(t, 1, st.FileUploads)
			require.Equal(t, 1, st.BatchCreates)
			require.Equal(t, 1, st.FileGets)
			require.Equal(t, 2, st.ContentDownloads)
		})
	}
}

// azureLine is one request line of an input file.
func azureLine(id, url, model string) string {
	return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":%q,"body":{"model":%q,"messages":[{"role":"user","content":"hi"}]}}`,
		id, url, model) + "\n"
}

// TestAzureValidation checks that each of Azure's input rules fails a batch with Azure's code, on the line at
// fault, and that they hold for Azure batches only.
func TestAzureValidation(t *testing.T) {
	t.Parallel()
	a := newAzureEnv(t, emulator.Options{
		MaxRequestsPerFile: 2, // OpenAI's cap, below Azure's
		MaxFileBytes:       2_000,
		Azure:              emulator.AzureOptions{MaxRequestsPerFile: 4, Deployments: []string{deployment, "other-batch"}},
	})
	const chat = "/chat/completions"
	lines := func(urls ...string) string {
		var b strings.Builder
		for i, u := range urls {
			b.WriteString(azureLine(fmt.Sprintf("r%d", i), u, deployment))
		}
		return b.String()
	}
	tests := []struct {
		name   string
		openAI bool // submit through the OpenAI paths instead
		data   string
		code   string // "" means the batch completes
		line   int64
	}{
		{name: "both url spellings, over OpenAI's cap", data: lines(chat, "/v1/chat/completions", chat, chat)},
		{name: "model_mismatch", data: lines(chat, chat) + azureLine("r9", chat, "other-batch"), code: emulator.CodeModelMismatch, line: 3},
		{name: "url_mismatch", data: lines(chat, "/embeddings"), code: emulator.CodeURLMismatch, line: 2},
		{name: "url_mismatch v1", data: lines("/v1/embeddings"), code: emulator.CodeURLMismatch, line: 1},
		{name: "duplicate_custom_id", data: lines(chat) + lines(chat), code: emulator.CodeDuplicateCustomID, line: 2},
		{name: "too_many_tasks", data: lines(chat, chat, chat, chat, chat), code: emulator.CodeTooManyTasks, line: 5},
		{name: "invalid_json_line", data: lines(chat) + `{"custom_id":` + "\n", code: emulator.CodeInvalidJSONLine, line: 2},
		{name: "UTF-8 BOM", data: "\ufeff" + lines(chat), code: emulator.CodeInvalidJSONLine, line: 1},
		{name: "invalid_request", data: `{"custom_id":"a","url":"/chat/completions","body":{"model":"gpt-4o-mini-batch"}}` + "\n",
			code: emulator.CodeInvalidRequest, line: 1},
		{name: "model_not_found", data: azureLine("a", chat, "gpt-4o"), code: emulator.CodeModelNotFound},
		{name: "file_too_large", data: azureLine("a", chat, deployment+strings.Repeat(" ", 2_000)), code: emulator.CodeFileTooLarge},
		{name: "OpenAI: Azure's url", openAI: true, data: lines(chat), code: emulator.CodeInvalidURL, line: 1},
		{name: "OpenAI: its own cap", openAI: true, data: string(chatLines(3, "m")), code: emulator.CodeTooManyRequests, line: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, endpoint := a.versioned, azureChat
			if tt.openAI {
				e, endpoint = a.openAI, openai.BatchNewParamsEndpointV1ChatCompletions
			}
			b := e.create(t, e.upload(t, []byte(tt.data)), endpoint)
			b = e.wait(t, b.ID, openai.BatchStatusCompleted, openai.BatchStatusFailed)
			if tt.code == "" {
				require.Equal(t, openai.BatchStatusCompleted, b.Status, "%+v", b.Errors)
				return
			}
			require.Equal(t, openai.BatchStatusFailed, b.Status)
			require.NotEmpty(t, b.Errors.Data)
			got := b.Errors.Data[0]
			require.Equal(t, tt.code, got.Code, got.Message)
			require.Equal(t, tt.line, got.Line)
			require.False(t, b.JSON.OutputFileID.Valid())
		})
	}
}

// TestAzureEndpoints checks the batch endpoints Azure takes at create, and that an embeddings batch answers with
// OpenAI's embedding shape.
func TestAzureEndpoints(t *testing.T) {
	t.Parallel()
	a := newAzureEnv(t, emulator.Options{})
	e := a.v1
	ctx := t.Context()

	data := `{"custom_id":"e1","method":"POST","url":"/embeddings","body":{"model":"emb-batch","input":["one","two"]}}` + "\n"
	b := e.create(t, e.upload(t, []byte(data)), "/embeddings")
	b = e.wait(t, b.ID, openai.BatchStatusCompleted, openai.BatchStatusFailed)
	require.Equal(t, openai.BatchStatusCompleted, b.Status, "%+v", b.Errors)
	lines := e.download(t, b.OutputFileID)
	require.Len(t, lines, 1)
	var emb openai.CreateEmbeddingResponse
	require.NoError(t, json.Unmarshal(lines[0].Response.Body, &emb))
	require.Len(t, emb.Data, 2)
	require.NotEmpty(t, emb.Data[0].Embedding)

	// OpenAI's spelling of the endpoint is taken too, and lines may use either spelling.
	b = e.create(t, e.upload(t, azureLines(2, deployment, "/chat/completions")), openai.BatchNewParamsEndpointV1ChatCompletions)
	require.Equal(t, "/v1/chat/completions", b.Endpoint)
	require.Equal(t, openai.BatchStatusCompleted, e.wait(t, b.ID, openai.BatchStatusCompleted, openai.BatchStatusFailed).Status)

	_, err := e.client.Batches.New(ctx, openai.BatchNewParams{
		InputFileID: b.InputFileID, Endpoint: "/completions", CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
	})
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
	require.Equal(t, "endpoint", apiErr.Param)
}

// azureCall sends one request with the given headers and returns the status and the decoded body.
func azureCall(t *testing.T, method, url string, header map[string]string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var m map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return resp.StatusCode, m
}

// requireAzureError checks Azure's gateway error: {"error":{"code","message"}} and nothing else.
func requireAzureError(t *testing.T, m map[string]any, code, msgPart string) {
	t.Helper()
	require.Len(t, m, 1)
	e, ok := m["error"].(map[string]any)
	require.True(t, ok, "no error object in %v", m)
	require.ElementsMatch(t, []string{"code", "message"}, keys(e))
	require.Equal(t, code, e["code"])
	require.Contains(t, e["message"], msgPart)
}

func TestAzureAuth(t *testing.T) {
	t.Parallel()
	a := newAzureEnv(t, emulator.Options{})
	tests := []struct {
		name   string
		header map[string]string
		msg    string // "" means authorized
	}{
		{"no key", nil, "missing subscription key"},
		{"empty api-key", map[string]string{"api-key": " "}, "missing subscription key"},
		{"wrong api-key", map[string]string{"api-key": "nope"}, "invalid subscription key"},
		{"wrong bearer", map[string]string{"Authorization": "Bearer nope"}, "invalid subscription key"},
		{"OpenAI's header spelled wrong", map[string]string{"Authorization": azureKey}, "missing subscription key"},
		{"right api-key", map[string]string{"api-key": azureKey}, ""},
		{"right bearer (Entra)", map[string]string{"Authorization": "Bearer " + azureKey}, ""},
	}
	for _, tt := range tests {
		for _, path := range []string{"/openai/batches?api-version=" + azureAPIVersion, "/openai/v1/batches"} {
			t.Run(tt.name+" "+path, func(t *testing.T) {
				t.Parallel()
				status, m := azureCall(t, http.MethodGet, a.url+path, tt.header)
				if tt.msg == "" {
					require.Equal(t, http.StatusOK, status, "%v", m)
					require.Equal(t, "list", m["object"])
					return
				}
				require.Equal(t, http.StatusUnauthorized, status)
				requireAzureError(t, m, "401", tt.msg)
			})
		}
	}

	t.Run("sdk sees 401", func(t *testing.T) {
		t.Parallel()
		c := openai.NewClient(azure.WithEndpoint(a.url, azureAPIVersion), azure.WithAPIKey("wrong-key"),
			azure.WithUnsafeAllowHTTP(), option.WithMaxRetries(0))
		_, err := c.Batches.Get(t.Context(), "batch_x")
		var apiErr *openai.Error
		require.ErrorAs(t, err, &apiErr)
		require.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)
	})

	t.Run("any key when none is configured", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, emulator.Options{})
		status, _ := azureCall(t, http.MethodGet, e.http.URL+"/openai/v1/batches", map[string]string{"api-key": "anything"})
		require.Equal(t, http.StatusOK, status)
		status, _ = azureCall(t, http.MethodGet, e.http.URL+"/openai/v1/batches", nil)
		require.Equal(t, http.StatusUnauthorized, status)
		require.Equal(t, 1, e.srv.Stats().Unauthorized)
	})
}

func TestAzureAPIVersion(t *testing.T) {
	t.Parallel()
	a := newAzureEnv(t, emulator.Options{})
	key := map[string]string{"api-key": azureKey}
	tests := []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"missing", http.MethodGet, "/openai/batches", http.StatusNotFound, "404"},
		{"missing on a file", http.MethodGet, "/openai/files/file-x/content", http.StatusNotFound, "404"},
		{"before the batch API", http.MethodGet, "/openai/batches?api-version=2024-02-01", http.StatusNotFound, "404"},
		{"not a version", http.MethodGet, "/openai/batches?api-version=latest-and-greatest", http.StatusBadRequest, "BadRequest"},
		{"GA version", http.MethodGet, "/openai/batches?api-version=2024-10-21", http.StatusOK, ""},
		{"v1 needs none", http.MethodGet, "/openai/v1/files", http.StatusOK, ""},
		{"deployment routes are not emulated", http.MethodPost, "/openai/deployments/d/chat/completions?api-version=2024-10-21",
			http.StatusNotFound, "404"},
		{"method not served", http.MethodPut, "/openai/v1/batches", http.StatusNotFound, "404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			status, m := azureCall(t, tt.method, a.url+tt.path, key)
			require.Equal(t, tt.status, status, "%v", m)
			if tt.code != "" {
				requireAzureError(t, m, tt.code, "")
			}
		})
	}
}

// Azure input files keep no default expiry, and an expires_after must lie within Azure's 14 to 30 days.
func TestAzureFileExpiry(t *testing.T) {
	t.Parallel()
	start := time.Now()
	var elapsed atomic.Int64
	a := newAzureEnv(t, emulator.Options{Now: func() time.Time { return start.Add(time.Duration(elapsed.Load())) }})
	e := a.versioned
	ctx := t.Context()
	upload := func(secs int64) (*openai.FileObject, error) {
		return e.client.Files.New(ctx, openai.FileNewParams{
			File:    openai.File(bytes.NewReader(azureLines(1, deployment, "/chat/completions")), "in.jsonl", "application/jsonl"),
			Purpose: openai.FilePurposeBatch, ExpiresAfter: openai.FileNewParamsExpiresAfter{Seconds: secs},
		})
	}

	forever := e.upload(t, azureLines(1, deployment, "/chat/completions"))
	fortnight, err := upload(1_209_600)
	require.NoError(t, err)
	require.Equal(t, start.Unix()+1_209_600, fortnight.ExpiresAt)

	_, err = upload(3600)
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr, "an hour is below Azure's minimum")
	require.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
	require.Equal(t, "expires_after", apiErr.Param)

	elapsed.Store(int64(400 * 24 * time.Hour))
	_, err = e.client.Files.Get(ctx, forever)
	require.NoError(t, err, "no default expiry")
	_, err = e.client.Files.Get(ctx, fortnight.ID)
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusNotFound, apiErr.StatusCode)
}

// Azure does not expire a batch that runs past 24 hours; OpenAI does.
func TestAzureBatchOutlivesDay(t *testing.T) {
	t.Parallel()
	start := time.Now()
	var elapsed atomic.Int64
	a := newAzureEnv(t, emulator.Options{
		PhaseDelay: 100 * time.Millisecond, // the clock moves while both batches validate
		Now:        func() time.Time { return start.Add(time.Duration(elapsed.Load())) },
	})
	az := a.versioned.create(t, a.versioned.upload(t, azureLines(5, deployment, "/chat/completions")), azureChat)
	oa := a.openAI.submit(t, chatLines(5, "gpt-4o-mini"))
	elapsed.Store(int64(25 * time.Hour))

	oa = a.openAI.wait(t, oa.ID, openai.BatchStatusCompleted, openai.BatchStatusExpired)
	require.Equal(t, openai.BatchStatusExpired, oa.Status, "the OpenAI batch saw the clock")
	az = a.versioned.wait(t, az.ID, openai.BatchStatusCompleted, openai.BatchStatusExpired)
	require.Equal(t, openai.BatchStatusCompleted, az.Status)
	require.Equal(t, int64(5), az.RequestCounts.Completed)
}

// A cancelled Azure batch delivers both result files, empty when nothing ran.
func TestAzureCancel(t *testing.T) {
	t.Parallel()
	a := newAzureEnv(t, emulator.Options{PhaseDelay: 200 * time.Millisecond}) // the cancel lands while validating
	e := a.v1
	b := e.create(t, e.upload(t, azureLines(3, deployment, "/chat/completions")), azureChat)
	c, err := e.client.Batches.Cancel(t.Context(), b.ID)
	require.NoError(t, err)
	require.Equal(t, openai.BatchStatusCancelling, c.Status)
	b = e.wait(t, b.ID, openai.BatchStatusCancelled)
	require.True(t, b.JSON.OutputFileID.Valid())
	require.True(t, b.JSON.ErrorFileID.Valid())
	require.Empty(t, e.download(t, b.OutputFileID))
	require.Empty(t, e.download(t, b.ErrorFileID))
}

// Injected faults hit the Azure paths as they hit OpenAI's, after authentication.
func TestAzureFaults(t *testing.T) {
	t.Parallel()
	a := newAzureEnv(t, emulator.Options{HTTP500Rate: 1})
	_, err := a.versioned.client.Batches.List(t.Context(), openai.BatchListParams{})
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusInternalServerError, apiErr.StatusCode)
	status, _ := azureCall(t, http.MethodGet, a.url+"/openai/v1/batches", nil)
	require.Equal(t, http.StatusUnauthorized, status, "no fault before the key check")
	st := a.srv.Stats()
	require.Equal(t, 1, st.Injected500)
	require.Equal(t, 2, st.BatchLists)
	require.Equal(t, 1, st.Unauthorized)
}

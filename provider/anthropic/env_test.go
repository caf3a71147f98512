package anthropic

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

const testKey = "sk-ant-provider-test"

// env is a Provider talking over real HTTP to an emulator, possibly through a handler that tampers with the
// answers. skew moves the emulator's clock, so a batch can be created "minutes ago" or "minutes from now".
type env struct {
	emu    *emulator.Server
	p      *Provider
	client sdk.Client
	skew   atomic.Int64 // nanoseconds added to the emulator's clock
}

func newEnv(t *testing.T, opts emulator.Options, wrap func(http.Handler) http.Handler) *env {
	t.Helper()
	e := &env{}
	if opts.PhaseDelay == 0 {
		opts.PhaseDelay = emulator.TestPhaseDelay
	}
	opts.APIKey = testKey
	opts.Now = func() time.Time { return time.Now().Add(time.Duration(e.skew.Load())) }
	emu, err := emulator.New(opts)
	require.NoError(t, err)
	var h http.Handler = emu
	if wrap != nil {
		h = wrap(emu)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		ts.Close()
		require.NoError(t, emu.Close())
	})
	e.emu = emu
	e.client = sdk.NewClient(option.WithBaseURL(ts.URL), option.WithAPIKey(testKey), option.WithMaxRetries(0))
	e.p = &Provider{
		API:             &e.client,
		Retry:           batchapi.Retry{Initial: time.Millisecond, MaxElapsed: 10 * time.Second},
		ReconcileSettle: 50 * time.Millisecond,
		MatchWindow:     time.Minute,
	}
	return e
}

// cutFirstCreate lets the first POST /v1/messages/batches create its batch, then cuts the connection before the
// answer, as a proxy dropping it would.
func cutFirstCreate(next http.Handler) http.Handler {
	var n atomic.Int32
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/messages/batches" && n.Add(1) == 1 {
			next.ServeHTTP(httptest.NewRecorder(), r)
			panic(http.ErrAbortHandler)
		}
		next.ServeHTTP(w, r)
	})
}

// intent is the Intent of a spool file of n requests, as the submitter makes it.
func intent(path string, n int) provider.Intent {
	return provider.Intent{Endpoint: provider.EndpointMessages, Path: path, Requests: n, Since: time.Now()}
}

// params is a valid Messages request body; pad lengthens its prompt.
func params(i, pad int) string {
	return fmt.Sprintf(`{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"review %d %s"}]}`,
		i, strings.Repeat("x", pad))
}

// writeSpool writes a spool file with one request line per ID, in batchctl's request-line format.
func writeSpool(t testing.TB, ids []string, pad int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "0001.jsonl")
	f, err := os.Create(path)
	require.NoError(t, err)
	w := bufio.NewWriter(f)
	var buf []byte
	for i, id := range ids {
		r := jsonl.Request{CustomID: id, Method: http.MethodPost, URL: provider.EndpointMessages, Body: []byte(params(i, pad))}
		buf = append(r.AppendJSON(buf[:0]), '\n')
		_, err := w.Write(buf)
		require.NoError(t, err)
	}
	require.NoError(t, w.Flush())
	require.NoError(t, f.Close())
	return path
}

// seqIDs returns n IDs prefix-0 … prefix-(n-1).
func seqIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return ids
}

// create sends a spool file of n requests with IDs made from prefix, and returns its batch.
func (e *env) create(t *testing.T, prefix string, n int) store.Batch {
	t.Helper()
	path := writeSpool(t, seqIDs(prefix, n), 0)
	b, existing, err := e.p.Create(t.Context(), intent(path, n), false)
	require.NoError(t, err)
	require.False(t, existing)
	return b
}

// waitEnded polls a batch through the provider until it has ended.
func (e *env) waitEnded(t *testing.T, id string) store.Batch {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := e.p.Get(t.Context(), id)
		require.NoError(t, err)
		if b.EndedAt != nil {
			return b
		}
		require.True(t, time.Now().Before(deadline), "batch %s stuck in %s", id, b.Status)
		time.Sleep(5 * time.Millisecond)
	}
}

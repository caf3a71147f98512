package anthropic

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/store"
)

// collectIDs drains RequestIDs, failing the test on an error.
func collectIDs(t testing.TB, p *Provider, path string) []store.RequestID {
	t.Helper()
	var got []store.RequestID
	for r, err := range p.RequestIDs(path) {
		require.NoError(t, err)
		got = append(got, r)
	}
	return got
}

// wantIDs is what RequestIDs must yield for ids: kept as they are, or every one sent as r<line>.
func wantIDs(ids []string, keep bool) []store.RequestID {
	want := make([]store.RequestID, len(ids))
	for i, id := range ids {
		want[i] = store.RequestID{Line: i + 1, CustomID: id, APICustomID: id}
		if !keep {
			want[i].APICustomID = "r" + strconv.Itoa(i+1)
		}
	}
	return want
}

// createRecord is what the server saw of one create call.
type createRecord struct {
	contentLength    int64
	transferEncoding []string
	read             int64
}

type countingBody struct {
	io.ReadCloser
	n *int64
}

func (c countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	*c.n += int64(n)
	return n, err
}

// recordCreates records the Content-Length and the body length of every create call.
func recordCreates(mu *sync.Mutex, recs *[]*createRecord) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || r.URL.Path != "/v1/messages/batches" {
				next.ServeHTTP(w, r)
				return
			}
			rec := &createRecord{contentLength: r.ContentLength, transferEncoding: r.TransferEncoding}
			r.Body = countingBody{ReadCloser: r.Body, n: &rec.read}
			next.ServeHTTP(w, r)
			mu.Lock()
			*recs = append(*recs, rec)
			mu.Unlock()
		})
	}
}

// A file whose IDs Anthropic accepts, each once, is sent under them; any ID it would refuse, or any duplicate,
// sends the whole file as r<line>. RequestIDs yields exactly what Create sent, in the order the API received
// the requests, and the create body's length is the Content-Length announced.
func TestRequestIDsAreWhatCreateSends(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 64)
	for _, tc := range []struct {
		name string
		ids  []string
		keep bool
	}{
		{"valid and unique", []string{"a", "b_2", "C-3", long, "0"}, true},
		{"one invalid", []string{"a", "a:1", "c"}, false},
		{"a duplicate", []string{"a", "b", "a"}, false},
		{"too long", []string{"a", long + "a"}, false},
		{"empty", []string{"a", ""}, false},
		{"escapes", []string{"a", `q"u<o>te\` + "é"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var (
				mu   sync.Mutex
				recs []*createRecord
			)
			e := newEnv(t, emulator.Options{}, recordCreates(&mu, &recs))
			path := writeSpool(t, tc.ids, 0)

			want := wantIDs(tc.ids, tc.keep)
			got := collectIDs(t, e.p, path)
			require.Equal(t, want, got)

			// The body on its own: one {"custom_id","params"} per request line, params the line's body as it is.
			var buf bytes.Buffer
			n, err := createBody(&buf, path)
			require.NoError(t, err)
			require.Equal(t, int64(buf.Len()), n, "createBody counts the bytes it writes")
			var body struct {
				Requests []struct {
					CustomID string          `json:"custom_id"`
					Params   json.RawMessage `json:"params"`
				} `json:"requests"`
			}
			require.NoError(t, json.Unmarshal(buf.Bytes(), &body))
			require.Len(t, body.Requests, len(tc.ids))
			for i, r := range body.Requests {
				require.Equal(t, want[i].APICustomID, r.CustomID)
				require.Equal(t, params(i, 0), string(r.Params))
			}

			b, existing, err := e.p.Create(t.Context(), intent(path, len(tc.ids)), false)
			require.NoError(t, err)
			require.False(t, existing)
			require.Equal(t, len(tc.ids), b.RequestTotal)
			rec, ok := e.emu.MessageBatch(b.BatchID)
			require.True(t, ok)
			api := make([]string, len(got))
			for i, r := range got {
				api[i] = r.APICustomID
			}
			require.Equal(t, api, rec.CustomIDs, "the API received the requests under the IDs RequestIDs yields")

			mu.Lock()
			defer mu.Unlock()
			require.Len(t, recs, 1)
			require.Equal(t, n, recs[0].contentLength, "Content-Length is the body's exact length")
			require.Equal(t, n, recs[0].read, "the server read as many bytes as announced")
			require.Empty(t, recs[0].transferEncoding, "not chunked")
		})
	}
}

// A file larger than the reader's buffer: the IDs are read in several fills of it. An ID repeated far from its
// first use still sends the file as r<line>, and the IDs RequestIDs yields stay what the file holds.
func TestRequestIDsLargeFile(t *testing.T) {
	t.Parallel()
	const n = 4000 // × ~150 bytes: over twice the reader's 256 KB buffer
	unique := seqIDs("req", n)
	dup := seqIDs("req", n)
	dup[n-1] = dup[0]
	for _, tc := range []struct {
		name string
		ids  []string
		keep bool
	}{
		{"unique", unique, true},
		{"first ID repeated last", dup, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, emulator.Options{}, nil)
			path := writeSpool(t, tc.ids, 40)
			info, err := os.Stat(path)
			require.NoError(t, err)
			require.Greater(t, info.Size(), int64(2*256<<10))

			got := collectIDs(t, e.p, path)
			require.Equal(t, wantIDs(tc.ids, tc.keep), got)

			b, _, err := e.p.Create(t.Context(), intent(path, n), false)
			require.NoError(t, err)
			rec, ok := e.emu.MessageBatch(b.BatchID)
			require.True(t, ok)
			require.Len(t, rec.CustomIDs, n)
			for i, r := range got {
				require.Equal(t, r.APICustomID, rec.CustomIDs[i], "line %d", i+1)
			}
		})
	}
}

// A line that is not a request line is an error naming the file and line, from RequestIDs and createBody alike.
func TestRequestIDsBadLine(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, nil)
	path := writeSpool(t, []string{"a", "b"}, 0)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`{"custom_id":"c","method":"POST","url":"/v1/messages"}` + "\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())

	var errs []error
	for _, err := range e.p.RequestIDs(path) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	require.Len(t, errs, 1)
	require.ErrorContains(t, errs[0], path+":3: not a request line")

	_, err = createBody(io.Discard, path)
	require.ErrorContains(t, err, path+":3")
}

// A spool file Create cannot read is a local problem: Create fails at once, naming the line, without recording an
// attempt, sending, or searching the batch list for a create that never left.
func TestCreateBadSpoolFile(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, nil)
	e.p.Retry.MaxElapsed = 5 * time.Second
	path := writeSpool(t, []string{"a", "b"}, 0)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("{\"custom_id\":\"c\"\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())

	in := intent(path, 3)
	attempts := 0
	in.BeforeCreate = func(time.Time) error { attempts++; return nil }
	start := time.Now()
	_, _, err = e.p.Create(t.Context(), in, false)
	require.ErrorContains(t, err, path+":3")
	require.Less(t, time.Since(start), time.Second, "not retried")
	require.Zero(t, attempts, "no attempt recorded: nothing was sent")
	st := e.emu.Stats().Anthropic
	require.Zero(t, st.BatchCreates)
	require.Zero(t, st.BatchLists, "no search for a create that never left")
}

// largeSpool writes a spool file of n requests with prompts of pad bytes and returns it with its size.
func largeSpool(tb testing.TB, n, pad int, prefix string) (string, int64) {
	tb.Helper()
	path := writeSpool(tb, seqIDs(prefix, n), pad)
	info, err := os.Stat(path)
	require.NoError(tb, err)
	return path, info.Size()
}

// The create body of a 50 000-request file is streamed: what createBody allocates in all is its buffers and the
// duplicate check's hash of each ID, whatever the requests' size, whether the IDs are kept or mapped; nothing of
// the bodies.
func TestCreateBodyMemoryIsFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 30 MB file")
	}
	const (
		n       = 50_000
		buffers = 2 << 20 // the writer's 1 MB and a 256 KB reader per pass, with room
		perID   = 64      // a hash set entry, with its growth
	)
	for _, prefix := range []string{"req", "bad:id"} {
		path, size := largeSpool(t, n, 500, prefix)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		written, err := createBody(io.Discard, path)
		runtime.ReadMemStats(&after)
		require.NoError(t, err)
		require.Greater(t, written, size*9/10, "the body holds every request")
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: file %d MB, body %d MB, allocated %.1f MB", prefix, size>>20, written>>20, float64(alloc)/(1<<20))
		require.Less(t, alloc, uint64(buffers+perID*n), "allocations are bounded, not proportional to the file")
	}
}

// BenchmarkCreateBody measures the create body's throughput and allocations for a 10 000-request file.
func BenchmarkCreateBody(b *testing.B) {
	for _, prefix := range []string{"req", "bad:id"} {
		b.Run(strings.TrimSuffix(prefix, ":id"), func(b *testing.B) {
			path, size := largeSpool(b, 10_000, 500, prefix)
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := createBody(io.Discard, path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

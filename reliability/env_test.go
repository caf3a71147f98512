package reliability_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/pgtest"
)

// Timeouts of the suite. They are generous: a slow CI machine must not make a correct batchctl fail.
const (
	// commandTimeout bounds one batchctl run that is expected to finish on its own.
	commandTimeout = 3 * time.Minute
	// eventTimeout bounds the wait for an observable state (a call reaching the emulator, a row appearing).
	eventTimeout = time.Minute
)

// apiKey is what the tests give batchctl as the API key (OPENAI_API_KEY, AZURE_OPENAI_API_KEY or
// ANTHROPIC_API_KEY), except the secrets test, which uses its own.
const apiKey = "sk-reliability-test"

// env is one emulator over real HTTP, optionally a migrated schema, and the environment of the batchctl processes
// a test starts against them.
type env struct {
	emu   *emulator.Server
	trap  *trap
	api   api // the API batchctl is pointed at
	vars  map[string]string
	dir   string // scratch directory: inputs, spool, rejects
	stdin string // file in dir that processes read as stdin; "" for none
	// stdinPipe, when set, is the read end of a pipe the next process started reads as stdin (stdin is ignored).
	stdinPipe *os.File
	schema    string
	pool      *pgxpool.Pool

	mu    sync.Mutex
	procs []*proc // every process started, for the secrets check
}

// newEnv starts an emulator behind a trap and returns its environment for OpenAI, with BATCHCTL_SPOOL_DIR set and
// no database.
func newEnv(t *testing.T, opts emulator.Options) *env {
	t.Helper()
	return newAPIEnv(t, openAIAPI, opts)
}

// newAPIEnv is newEnv for the API a: batchctl gets a's credentials only.
func newAPIEnv(t *testing.T, a api, opts emulator.Options) *env {
	t.Helper()
	if opts.PhaseDelay == 0 {
		opts.PhaseDelay = 5 * time.Millisecond
	}
	emu, err := emulator.New(opts)
	require.NoError(t, err)
	tr := newTrap(emu)
	ts := httptest.NewServer(tr)
	t.Cleanup(func() {
		tr.disarm()
		ts.CloseClientConnections()
		ts.Close()
		_ = emu.Close()
	})
	key := opts.APIKey
	if key == "" {
		key = apiKey
	}
	dir := t.TempDir()
	vars := a.vars(ts.URL, key)
	vars["BATCHCTL_SPOOL_DIR"] = filepath.Join(dir, "spool")
	// The emulator's batch list shows a batch at once.
	vars["BATCHCTL_RECONCILE_SETTLE"] = "100ms"
	return &env{emu: emu, trap: tr, api: a, dir: dir, vars: vars}
}

// withDB gives the environment a fresh migrated schema of the test database.
func (e *env) withDB(t *testing.T) *env {
	t.Helper()
	url, schema := pgtest.MigratedSchema(t)
	e.useDB(t, url, schema)
	return e
}

// useDB points the environment at a migrated schema of any server.
func (e *env) useDB(t *testing.T, url, schema string) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	e.pool, e.schema = pool, schema
	e.vars["DATABASE_URL"] = url
	e.vars["BATCHCTL_SCHEMA"] = schema
}

// count runs a query returning one integer; $schema stands for the test's schema.
func (e *env) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	require.NoError(t, e.pool.QueryRow(ctx, strings.ReplaceAll(query, "$schema", e.schema), args...).Scan(&n))
	return n
}

// environ is the process environment without any setting that could point batchctl elsewhere (make test runs
// under DATABASE_URL; a developer's shell may hold any provider's credentials), plus vars.
func environ(vars map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "DATABASE_URL" || strings.HasPrefix(k, "BATCHCTL_") || strings.HasPrefix(k, "OPENAI_") ||
			strings.HasPrefix(k, "AZURE_OPENAI_") || strings.HasPrefix(k, "ANTHROPIC_") {
			continue
		}
		out = append(out, kv)
	}
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	return out
}

// syncBuffer is a bytes.Buffer a process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a running batchctl.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	code           int // exit code once done; -1 when killed by a signal
	err            error
}

// start starts batchctl with args in the environment, in the directory e.dir. Its stdin is the file e.stdin names
// (relative to e.dir), or empty.
func (e *env) start(t *testing.T, tl *tally, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary, args...), done: make(chan struct{})}
	p.cmd.Env = environ(e.vars)
	p.cmd.Dir = e.dir
	if e.stdinPipe != nil {
		p.cmd.Stdin, e.stdinPipe = e.stdinPipe, nil
	} else if e.stdin != "" {
		f, err := os.Open(filepath.Join(e.dir, e.stdin))
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		p.cmd.Stdin = f
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	require.NoError(t, p.cmd.Start())
	tl.runs.Add(1)
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()
	go func() {
		defer close(p.done)
		p.err = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// kill sends SIGKILL and waits for the process to be gone. It reports false when the process had already exited.
func (p *proc) kill(tl *tally) bool {
	select {
	case <-p.done:
		return false
	default:
	}
	err := p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	if err != nil || p.code != -1 {
		return false // it exited on its own just before the signal
	}
	tl.kills.Add(1)
	return true
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit on its own and returns its exit code; it kills it after timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("batchctl %s did not finish within %s; stderr:\n%s", strings.Join(p.cmd.Args[1:], " "), timeout, tail(p.stderr.String(), 4000))
		return -1
	}
}

// run runs batchctl to completion and returns the process.
func (e *env) run(t *testing.T, tl *tally, args ...string) *proc {
	t.Helper()
	p := e.start(t, tl, args...)
	p.wait(t, commandTimeout)
	return p
}

// tail returns the last n bytes of s, for failure messages.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// trap is an http.Handler in front of the emulator that can hold one chosen call: before the emulator sees it (the
// call is in flight) or after the emulator handled it (the call took effect, its answer is lost). A test holds a
// call, kills the client, then releases it; that is how a crash lands exactly between two steps.
type trap struct {
	next http.Handler

	mu      sync.Mutex
	armed   bool
	method  string
	path    string
	n       int  // hold the n-th matching call after arming (1-based)
	after   bool // hold after the emulator handled the call
	seen    int
	hit     chan struct{} // closed when the call is held
	release chan struct{} // closed to let it go
}

func newTrap(next http.Handler) *trap { return &trap{next: next} }

// arm makes the trap hold the n-th call of method and path from now on; the returned channel is closed when it does.
func (tr *trap) arm(method, path string, n int, after bool) <-chan struct{} {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.armed, tr.method, tr.path, tr.n, tr.after, tr.seen = true, method, path, n, after, 0
	tr.hit, tr.release = make(chan struct{}), make(chan struct{})
	return tr.hit
}

// disarm releases a held call and holds no other.
func (tr *trap) disarm() {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.armed || tr.release != nil {
		select {
		case <-tr.release:
		default:
			close(tr.release)
		}
	}
	tr.armed = false
}

func (tr *trap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tr.mu.Lock()
	hold := tr.armed && r.Method == tr.method && r.URL.Path == tr.path
	var after bool
	var hit, release chan struct{}
	if hold {
		tr.seen++
		hold = tr.seen == tr.n
		if hold {
			tr.armed = false
			after, hit, release = tr.after, tr.hit, tr.release
		}
	}
	tr.mu.Unlock()
	if !hold {
		tr.next.ServeHTTP(w, r)
		return
	}
	if after {
		rec := httptest.NewRecorder()
		tr.next.ServeHTTP(rec, r)
	}
	close(hit)
	<-release
	// The client is gone: cut the connection rather than answer.
	panic(http.ErrAbortHandler)
}

// waitFor polls cond until it holds or eventTimeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", eventTimeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitValidated waits until the emulator has finished validating every batch, so their CustomIDs are known.
func waitValidated(t *testing.T, emu *emulator.Server) []emulator.BatchRecord {
	t.Helper()
	var bs []emulator.BatchRecord
	waitFor(t, "every batch validated", func() bool {
		bs = emu.Batches()
		for _, b := range bs {
			if b.Status == emulator.StatusValidating {
				return false
			}
		}
		return true
	})
	return bs
}

// injected sums the faults the emulator injected, in the calls and batches of every API it serves.
func injected(s emulator.Stats) int64 {
	return int64(s.Injected429 + s.Injected500 + s.InjectedResets + s.TruncatedDownloads + s.FailedRequests +
		s.ExpiredBatches + s.TokenLimitFailures + s.Anthropic.ErroredRequests + s.Anthropic.ExpiredBatches)
}

// writeRecords writes n data records {"id": "<prefix>-<i>", "text": "..."} (each text padded to about pad bytes)
// to a new file in dir and returns its path and the ids in order.
func writeRecords(t *testing.T, dir, name, prefix string, n, pad int) (string, []string) {
	t.Helper()
	var b strings.Builder
	ids := make([]string, n)
	filler := strings.Repeat("lorem ipsum ", pad/12+1)[:pad]
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%05d", prefix, i+1)
		fmt.Fprintf(&b, `{"id":%q,"text":"record %d of %s %s"}`+"\n", ids[i], i+1, prefix, filler)
	}
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path, ids
}

// recordOfText is the id of the record writeRecords wrote with this text ("record 7 of s1 lorem..." is s1-00007):
// how a check tells which record a request was made from when the API got it under another custom_id.
func recordOfText(text string) (string, bool) {
	var n int
	var prefix string
	if _, err := fmt.Sscanf(text, "record %d of %s ", &n, &prefix); err != nil || n < 1 {
		return "", false
	}
	return fmt.Sprintf("%s-%05d", prefix, n), true
}

package anthropic

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/provider"
)

// cutCreate lets the n-th POST /v1/messages/batches create its batch, then cuts the connection before the answer.
func cutCreate(n int32) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		var seen atomic.Int32
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/v1/messages/batches" && seen.Add(1) == n {
				next.ServeHTTP(httptest.NewRecorder(), r)
				panic(http.ErrAbortHandler)
			}
			next.ServeHTTP(w, r)
		})
	}
}

// lostIntent is the intent of a spool file of n requests whose BeforeCreate counts the attempts.
func lostIntent(t *testing.T, prefix string, n int, attempts *int) provider.Intent {
	t.Helper()
	path := writeSpool(t, seqIDs(prefix, n), 0)
	in := intent(path, n)
	in.BeforeCreate = func(time.Time) error { *attempts++; return nil }
	return in
}

// A create whose answer is lost made its batch: Create finds it in the batch list, by its creation time and its
// request count, instead of sending the requests again.
func TestCreateFindsLostCreate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, cutFirstCreate)
	attempts := 0
	in := lostIntent(t, "req", 5, &attempts)
	b, existing, err := e.p.Create(t.Context(), in, false)
	require.NoError(t, err)
	require.True(t, existing, "found, not created")
	st := e.emu.Stats().Anthropic
	require.Equal(t, 1, st.BatchesCreated, "the lost create was not repeated")
	require.Equal(t, 1, st.BatchCreates)
	require.Positive(t, st.BatchLists)
	require.Equal(t, 1, attempts, "one attempt sent")
	recs := e.emu.MessageBatches()
	require.Len(t, recs, 1)
	require.Equal(t, recs[0].ID, b.BatchID)
	require.Equal(t, 5, b.RequestTotal)
	require.Equal(t, seqIDs("req", 5), recs[0].CustomIDs)
}

// Two batches of the same request count created in the window, neither owned by another intent: Find cannot tell
// which is the lost create's, so Create fails closed, creating nothing more. Once Owned reports the other one as
// another intent's, the lost create's batch is found.
func TestCreateRefusesToGuess(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, cutCreate(2))
	other := e.create(t, "other", 5)
	attempts := 0
	in := lostIntent(t, "req", 5, &attempts)
	_, _, err := e.p.Create(t.Context(), in, false)
	require.ErrorIs(t, err, batchapi.ErrReconcileIncomplete)
	require.ErrorContains(t, err, other.BatchID)
	st := e.emu.Stats().Anthropic
	require.Equal(t, 2, st.BatchesCreated, "no third batch")
	require.Equal(t, 2, st.BatchCreates, "the lost create was not sent again")
	require.Equal(t, 1, attempts)
	ours := e.emu.MessageBatches()[1].ID

	in.LastAttempt = time.Now()
	_, err = e.p.FindIntent(t.Context(), in)
	require.ErrorIs(t, err, batchapi.ErrReconcileIncomplete, "FindIntent refuses too")

	var asked []string
	in.Owned = func(_ context.Context, id string) (bool, error) {
		asked = append(asked, id)
		return id == other.BatchID, nil
	}
	b, err := e.p.FindIntent(t.Context(), in)
	require.NoError(t, err)
	require.NotNil(t, b)
	require.Equal(t, ours, b.BatchID)
	require.ElementsMatch(t, []string{ours, other.BatchID}, asked)

	b2, existing, err := e.p.Create(t.Context(), in, true)
	require.NoError(t, err)
	require.True(t, existing)
	require.Equal(t, ours, b2.BatchID)
	require.Equal(t, 2, e.emu.Stats().Anthropic.BatchesCreated)
}

// Only a batch of the intent's request count, created within MatchWindow of the moment the create was sent, is
// taken for it; the search walks both sides of that moment.
func TestFindWindow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, nil)
	at := func(skew time.Duration, prefix string, n int) string {
		e.skew.Store(int64(skew))
		defer e.skew.Store(0)
		return e.create(t, prefix, n).BatchID
	}
	const far = 10 * time.Minute
	before := at(-far, "before", 3)
	otherSize := at(0, "other", 4)
	now := at(0, "now", 3)
	after := at(far, "after", 3)
	require.Equal(t, time.Minute, e.p.MatchWindow)

	for _, tc := range []struct {
		name     string
		sentAt   time.Duration
		requests int
		want     string
	}{
		{"now", 0, 3, now},
		{"the other size", 0, 4, otherSize},
		{"ten minutes ago", -far, 3, before},
		{"in ten minutes", far, 3, after},
		{"five minutes ago: nothing within a minute", -far / 2, 3, ""},
		{"no batch of that size", 0, 5, ""},
	} {
		b, err := e.p.Find(t.Context(), provider.Intent{Requests: tc.requests}, time.Now().Add(tc.sentAt))
		require.NoError(t, err, tc.name)
		if tc.want == "" {
			require.Nil(t, b, tc.name)
			continue
		}
		require.NotNil(t, b, tc.name)
		require.Equal(t, tc.want, b.BatchID, tc.name)
	}
}

// A lost create among batches of another size and batches of its size created long before: Create finds its own.
func TestCreateFindsLostCreateAmongOthers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, cutCreate(3))
	e.skew.Store(int64(-10 * time.Minute))
	e.create(t, "old", 5)
	e.skew.Store(0)
	e.create(t, "small", 4)
	attempts := 0
	b, existing, err := e.p.Create(t.Context(), lostIntent(t, "req", 5, &attempts), false)
	require.NoError(t, err)
	require.True(t, existing)
	require.Equal(t, e.emu.MessageBatches()[2].ID, b.BatchID)
	require.Equal(t, 3, e.emu.Stats().Anthropic.BatchesCreated)
	require.Equal(t, 3, e.emu.Stats().Anthropic.BatchCreates)
}

// An intent with no LastAttempt was never sent, so no batch can be its own: FindIntent answers nil without
// listing, even with a batch of its size just created, and Create sends it. With the time an earlier run sent it,
// the batch of that run is found, and Create does not send it again.
func TestFindWithoutAttempt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, nil)
	path := writeSpool(t, seqIDs("req", 3), 0)
	sent := time.Now()
	earlier, _, err := e.p.Create(t.Context(), intent(path, 3), false)
	require.NoError(t, err)

	in := intent(path, 3)
	b, err := e.p.FindIntent(t.Context(), in)
	require.NoError(t, err)
	require.Nil(t, b)
	require.Zero(t, e.emu.Stats().Anthropic.BatchLists, "nothing listed")

	in.LastAttempt = sent
	b, err = e.p.FindIntent(t.Context(), in)
	require.NoError(t, err)
	require.NotNil(t, b)
	require.Equal(t, earlier.BatchID, b.BatchID)

	found, existing, err := e.p.Create(t.Context(), in, true)
	require.NoError(t, err)
	require.True(t, existing)
	require.Equal(t, earlier.BatchID, found.BatchID)
	require.Equal(t, 1, e.emu.Stats().Anthropic.BatchesCreated)

	// mayExist with no LastAttempt: nothing to look for, so it is sent.
	lists := e.emu.Stats().Anthropic.BatchLists
	second, existing, err := e.p.Create(t.Context(), intent(path, 3), true)
	require.NoError(t, err)
	require.False(t, existing)
	require.NotEqual(t, earlier.BatchID, second.BatchID)
	require.Equal(t, lists, e.emu.Stats().Anthropic.BatchLists)
}

// When Owned cannot tell whether a candidate is another intent's, the search fails closed: Create stops with
// ErrReconcileIncomplete and the reason, and sends nothing more.
func TestFindOwnedErrorFailsClosed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, cutFirstCreate)
	attempts := 0
	in := lostIntent(t, "req", 5, &attempts)
	down := errors.New("database is down")
	in.Owned = func(context.Context, string) (bool, error) { return false, down }
	_, _, err := e.p.Create(t.Context(), in, false)
	require.ErrorIs(t, err, batchapi.ErrReconcileIncomplete)
	require.ErrorIs(t, err, down)
	st := e.emu.Stats().Anthropic
	require.Equal(t, 1, st.BatchesCreated)
	require.Equal(t, 1, st.BatchCreates)
	require.Equal(t, 1, attempts)
}

// hideLists answers the first n batch lists with an empty page, as a list that does not show a batch created a
// moment ago.
func hideLists(n int32) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		var left atomic.Int32
		left.Store(n)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && r.URL.Path == "/v1/messages/batches" && left.Add(-1) >= 0 {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"data":[],"has_more":false,"first_id":null,"last_id":null}`))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// A lost create whose batch the list does not show yet: the search is repeated until ReconcileSettle has passed
// since the create was sent, and finds it.
func TestCreateWaitsForTheListToSettle(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, func(h http.Handler) http.Handler { return cutFirstCreate(hideLists(1)(h)) })
	e.p.ReconcileSettle = 300 * time.Millisecond
	attempts := 0
	start := time.Now()
	b, existing, err := e.p.Create(t.Context(), lostIntent(t, "req", 2, &attempts), false)
	require.NoError(t, err)
	require.True(t, existing)
	require.GreaterOrEqual(t, time.Since(start), e.p.ReconcileSettle/2, "waited before searching again")
	st := e.emu.Stats().Anthropic
	require.Equal(t, 1, st.BatchesCreated)
	require.Equal(t, 1, st.BatchCreates)
	require.Equal(t, 1, st.BatchLists, "the emulator answered the second search")
	require.Equal(t, e.emu.MessageBatches()[0].ID, b.BatchID)
}

// A batch list that says it has more but whose cursor does not advance cannot be searched to the end: Find fails
// closed rather than report nothing.
func TestFindStuckCursor(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && r.URL.Path == "/v1/messages/batches" {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"data":[],"has_more":true,"first_id":null,"last_id":"msgbatch_x"}`))
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	_, err := e.p.Find(t.Context(), provider.Intent{Requests: 1}, time.Now())
	require.ErrorIs(t, err, batchapi.ErrReconcileIncomplete)
	require.ErrorContains(t, err, "cursor does not advance")
}

// failLists answers the first n batch lists 529 overloaded_error, as Anthropic does under load.
func failLists(n int32) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		var left atomic.Int32
		left.Store(n)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && r.URL.Path == "/v1/messages/batches" && left.Add(-1) >= 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(529)
				_, _ = w.Write([]byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// A search whose list call fails transiently is retried like the create itself: the lost create's batch is found
// once the list answers, and nothing is created twice. A search that fails closed (ErrReconcileIncomplete) is not
// retried: see TestCreateRefusesToGuess.
func TestCreateRetriesAFailedSearch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{}, func(h http.Handler) http.Handler { return cutFirstCreate(failLists(2)(h)) })
	attempts := 0
	b, existing, err := e.p.Create(t.Context(), lostIntent(t, "req", 3, &attempts), false)
	require.NoError(t, err)
	require.True(t, existing)
	require.Equal(t, e.emu.MessageBatches()[0].ID, b.BatchID)
	st := e.emu.Stats().Anthropic
	require.Equal(t, 1, st.BatchesCreated)
	require.Equal(t, 1, st.BatchCreates, "never sent again")
	require.Equal(t, 1, attempts)
}

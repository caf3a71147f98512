package poll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// MinLoadRate (bytes per second) is the slowest a load's downloads may run: a load may take --load-timeout, or the
// size of the files it downloads (input, output and error files, as each Content-Length arrives) at this rate,
// whichever is longer. At 1 MiB/s a 785 MB output file gets at least 12.5 minutes; the measured rate of a load is
// tens of MiB/s, so the deadline only ends a download that has stalled.
const MinLoadRate = 1 << 20

// errLoadDeadline: a load ran past its deadline.
var errLoadDeadline = errors.New("results load ran past its deadline")

// loadDeadline is a results load's own deadline. River's (a fixed Worker.Timeout) cannot know the files' sizes, so a
// load of files longer to fetch than --load-timeout would time out and start over on every attempt, for ever.
type loadDeadline struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	log    *slog.Logger
	start  time.Time
	base   time.Duration // the load timeout
	rate   int64         // bytes per second

	mu     sync.Mutex
	bytes  int64
	budget time.Duration
	timer  *time.Timer
}

// newLoadDeadline derives from ctx a context cancelled base after now, or later as add learns of large files.
func newLoadDeadline(ctx context.Context, base time.Duration, rate int64, log *slog.Logger) *loadDeadline {
	ld := &loadDeadline{log: log, start: time.Now(), base: base, rate: rate, budget: base}
	ld.ctx, ld.cancel = context.WithCancelCause(ctx)
	ld.timer = time.AfterFunc(base, ld.expire)
	return ld
}

func (ld *loadDeadline) expire() {
	ld.mu.Lock()
	budget, n := ld.budget, ld.bytes
	ld.mu.Unlock()
	ld.cancel(fmt.Errorf("%w of %s (--load-timeout %s; %d bytes to download at %d KiB/s at least)",
		errLoadDeadline, budget.Round(time.Millisecond), ld.base, n, ld.rate>>10))
}

// add counts a download of size bytes (a response's Content-Length; negative when unknown) and moves the deadline
// to the time all downloads so far need at the minimum rate, when that is later.
func (ld *loadDeadline) add(size int64, fileID string) {
	if size <= 0 {
		return
	}
	ld.mu.Lock()
	defer ld.mu.Unlock()
	ld.bytes += size
	need := time.Duration(float64(ld.bytes) / float64(ld.rate) * float64(time.Second))
	if need <= ld.budget {
		return
	}
	if !ld.timer.Stop() {
		return // already expired
	}
	ld.budget = need
	ld.timer.Reset(time.Until(ld.start.Add(need)))
	ld.log.Warn("large files: load deadline extended past --load-timeout", "file_id", fileID, "bytes", ld.bytes,
		"load_timeout", ld.base, "deadline", need.Round(time.Millisecond), "min_rate_kib_s", ld.rate>>10)
}

// err is why the deadline ended the load (wrapping errLoadDeadline); nil while it has not.
func (ld *loadDeadline) err() error {
	if cause := context.Cause(ld.ctx); errors.Is(cause, errLoadDeadline) {
		return cause
	}
	return nil
}

// stop releases the timer and the context.
func (ld *loadDeadline) stop() {
	ld.timer.Stop()
	ld.cancel(nil)
}

package emulator

import (
	"container/heap"
	"context"
	"runtime"
	"sync"
	"time"
)

// DefaultWorkers is how many batch steps the emulator works at once when Options.Workers is zero.
var DefaultWorkers = max(4, 2*runtime.GOMAXPROCS(0))

// stepper is one batch's lifecycle as a state machine: each step does one phase's work (validate, answer a slice of
// the requests, write the result files) with its files open only for that step, and says how long until the next.
type stepper interface {
	step() (wait time.Duration, done bool)
}

// lifeTimer is a batch's place in the scheduler: due at at, in the heap (index ≥ 0), or being stepped.
type lifeTimer struct {
	st      stepper
	at      time.Time
	index   int // in the heap; -1 when not
	running bool
	nudged  bool // nudged while being stepped: the next step is due at once
}

// scheduler runs the lifecycles of every batch with a fixed number of goroutines: a timer heap holds each batch's
// next step, one dispatcher hands due steps to a fixed pool of workers. Ten thousand batches in flight cost ten
// thousand heap entries, not ten thousand goroutines with their files open across every pause.
type scheduler struct {
	mu   sync.Mutex
	h    timerHeap
	kick chan struct{} // the heap's head may have changed
	work chan *lifeTimer
}

func newScheduler() *scheduler {
	return &scheduler{kick: make(chan struct{}, 1), work: make(chan *lifeTimer)}
}

// start runs the dispatcher and workers until ctx is done; wg counts them.
func (sc *scheduler) start(ctx context.Context, workers int, wg *sync.WaitGroup) {
	wg.Add(1 + workers)
	go func() {
		defer wg.Done()
		sc.dispatch(ctx)
	}()
	for range workers {
		go func() {
			defer wg.Done()
			sc.worker(ctx)
		}()
	}
}

// add schedules a new lifecycle's first step after wait.
func (sc *scheduler) add(st stepper, wait time.Duration) *lifeTimer {
	t := &lifeTimer{st: st, index: -1}
	sc.mu.Lock()
	t.at = time.Now().Add(wait)
	heap.Push(&sc.h, t)
	sc.mu.Unlock()
	sc.signal()
	return t
}

// nudge makes the lifecycle's next step due now (a cancel or an expiry cuts its pause short).
func (sc *scheduler) nudge(t *lifeTimer) {
	if t == nil {
		return
	}
	sc.mu.Lock()
	switch {
	case t.index >= 0:
		t.at = time.Now()
		heap.Fix(&sc.h, t.index)
	case t.running:
		t.nudged = true
	}
	sc.mu.Unlock()
	sc.signal()
}

func (sc *scheduler) signal() {
	select {
	case sc.kick <- struct{}{}:
	default:
	}
}

func (sc *scheduler) dispatch(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := time.Hour
		var due *lifeTimer
		sc.mu.Lock()
		if len(sc.h) > 0 {
			if d := time.Until(sc.h[0].at); d > 0 {
				wait = d
			} else {
				due = heap.Pop(&sc.h).(*lifeTimer)
				due.running = true
			}
		}
		sc.mu.Unlock()
		if due != nil {
			select {
			case sc.work <- due:
				continue
			case <-ctx.Done():
				return
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-sc.kick:
		}
	}
}

func (sc *scheduler) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-sc.work:
			sc.mu.Lock()
			t.nudged = false // the step reads the batch's requests itself
			sc.mu.Unlock()
			wait, done := t.st.step()
			sc.mu.Lock()
			t.running = false
			if !done {
				if t.nudged {
					wait, t.nudged = 0, false
				}
				t.at = time.Now().Add(wait)
				heap.Push(&sc.h, t)
			}
			sc.mu.Unlock()
			if !done {
				sc.signal()
			}
		}
	}
}

// timerHeap orders lifecycles by when their next step is due.
type timerHeap []*lifeTimer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*lifeTimer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*h = old[:len(old)-1]
	return t
}

package poll

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/store"
)

// refreshMissed judges a row by the rounds the daemon last read: these tests set them (readAt now) rather than run
// rounds, to reach each case at a chosen moment.
func TestRefreshMissed(t *testing.T) {
	t.Parallel()
	// Times are ages at the moment each case runs (0: never): parallel cases run late, so a time fixed up front
	// would drift.
	type rounds struct{ lastStart, beforeStart, lastEnd, running time.Duration }
	tests := []struct {
		name             string
		rounds           rounds
		started, updated time.Duration
		missed           bool
	}{
		{"no round yet, poller just started", rounds{}, 2 * time.Second, 20 * time.Second, false},
		{"no round for two periods", rounds{}, time.Minute, time.Minute, true},
		// The case that made 984 GETs at 10 000 batches: one round done, none before it.
		{"one round done, row updated by it", rounds{lastStart: 3 * time.Second, lastEnd: time.Second},
			4 * time.Second, 2 * time.Second, false},
		{"one round done, long ago, row stale", rounds{lastStart: time.Minute, lastEnd: time.Minute},
			2 * time.Minute, 2 * time.Minute, true},
		{"two rounds started after the row's update", rounds{lastStart: 2 * time.Second, beforeStart: 7 * time.Second,
			lastEnd: time.Second}, time.Hour, 8 * time.Second, true},
		{"row updated by the last round", rounds{lastStart: 2 * time.Second, beforeStart: 7 * time.Second,
			lastEnd: time.Second}, time.Hour, 1500 * time.Millisecond, false},
		{"rounds stopped, row stale, a round running", rounds{lastStart: time.Minute, beforeStart: 65 * time.Second,
			lastEnd: time.Minute, running: 20 * time.Second}, time.Hour, time.Minute, false},
		{"rounds stopped, row stale, a round running past the job timeout", rounds{lastStart: 3 * time.Minute,
			beforeStart: 185 * time.Second, lastEnd: 3 * time.Minute, running: 2 * time.Minute}, time.Hour, 3 * time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			ago := func(d time.Duration) time.Time {
				if d == 0 {
					return time.Time{}
				}
				return now.Add(-d)
			}
			d := &Daemon{cfg: Config{Interval: Interval{Min: 5 * time.Second, Max: time.Minute}, RescueAfter: time.Hour},
				started: ago(tt.started)}
			d.rounds.RefreshRoundTimes = store.RefreshRoundTimes{LastStart: ago(tt.rounds.lastStart),
				BeforeStart: ago(tt.rounds.beforeStart), LastEnd: ago(tt.rounds.lastEnd), RunningSince: ago(tt.rounds.running)}
			d.rounds.readAt = now
			require.Equal(t, tt.missed, d.refreshMissed(context.Background(), ago(tt.updated)))
		})
	}
}

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
	now := time.Now()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	tests := []struct {
		name    string
		rounds  store.RefreshRoundTimes
		started time.Time
		updated time.Time
		missed  bool
	}{
		{"no round yet, poller just started", store.RefreshRoundTimes{}, ago(2 * time.Second), ago(20 * time.Second), false},
		{"no round for two periods", store.RefreshRoundTimes{}, ago(time.Minute), ago(time.Minute), true},
		// The case that made 984 GETs at 10 000 batches: one round done, none before it.
		{"one round done, row updated by it", store.RefreshRoundTimes{LastStart: ago(3 * time.Second), LastEnd: ago(time.Second)},
			ago(4 * time.Second), ago(2 * time.Second), false},
		{"one round done, long ago, row stale", store.RefreshRoundTimes{LastStart: ago(time.Minute), LastEnd: ago(time.Minute)},
			ago(2 * time.Minute), ago(2 * time.Minute), true},
		{"two rounds started after the row's update", store.RefreshRoundTimes{LastStart: ago(2 * time.Second),
			BeforeStart: ago(7 * time.Second), LastEnd: ago(time.Second)}, ago(time.Hour), ago(8 * time.Second), true},
		{"row updated by the last round", store.RefreshRoundTimes{LastStart: ago(2 * time.Second),
			BeforeStart: ago(7 * time.Second), LastEnd: ago(time.Second)}, ago(time.Hour), ago(1500 * time.Millisecond), false},
		{"rounds stopped, row stale, a round running", store.RefreshRoundTimes{LastStart: ago(time.Minute),
			BeforeStart: ago(65 * time.Second), LastEnd: ago(time.Minute), RunningSince: ago(20 * time.Second)},
			ago(time.Hour), ago(time.Minute), false},
		{"rounds stopped, row stale, a round running past the job timeout", store.RefreshRoundTimes{LastStart: ago(3 * time.Minute),
			BeforeStart: ago(185 * time.Second), LastEnd: ago(3 * time.Minute), RunningSince: ago(2 * time.Minute)},
			ago(time.Hour), ago(3 * time.Minute), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := &Daemon{cfg: Config{Interval: Interval{Min: 5 * time.Second, Max: time.Minute}, RescueAfter: time.Hour},
				started: tt.started}
			d.rounds.RefreshRoundTimes, d.rounds.readAt = tt.rounds, time.Now()
			require.Equal(t, tt.missed, d.refreshMissed(context.Background(), tt.updated))
		})
	}
}

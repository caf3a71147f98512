package poll

import (
	"fmt"
	"strings"
	"time"
)

// Defaults of the poll interval bounds.
const (
	DefaultMinInterval = 15 * time.Second
	DefaultMaxInterval = 10 * time.Minute
)

// Interval bounds how often a batch is looked at: often while it is young, rarely once it has run for hours.
type Interval struct {
	Min, Max time.Duration
}

// ParseInterval reads "MIN" or "MIN,MAX" (Go durations); a missing MAX is max(MIN, DefaultMaxInterval).
func ParseInterval(s string) (Interval, error) {
	minS, maxS, hasMax := strings.Cut(s, ",")
	lo, err := time.ParseDuration(strings.TrimSpace(minS))
	if err != nil || lo <= 0 {
		return Interval{}, fmt.Errorf("invalid poll interval %q: want MIN or MIN,MAX as positive durations such as 15s,10m", s)
	}
	hi := max(lo, DefaultMaxInterval)
	if hasMax {
		if hi, err = time.ParseDuration(strings.TrimSpace(maxS)); err != nil || hi < lo {
			return Interval{}, fmt.Errorf("invalid poll interval %q: MAX must be a duration not below MIN", s)
		}
	}
	return Interval{Min: lo, Max: hi}, nil
}

// String formats the bounds as ParseInterval reads them.
func (iv Interval) String() string { return iv.Min.String() + "," + iv.Max.String() }

// Next is the wait before looking at a batch of the given age again: a tenth of its age, within the bounds. A batch
// usually ends minutes to hours after creation; polling a 6-hour-old batch every 10 minutes costs little latency.
func (iv Interval) Next(age time.Duration) time.Duration {
	return min(max(age/10, iv.Min), iv.Max)
}

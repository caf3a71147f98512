package cost

import (
	"log/slog"
	"sync"
)

// UnknownWarner logs once per model per process that a model has no price, so a daemon loading thousands of
// batches of an unpriced model says so once, not thousands of times.
type UnknownWarner struct {
	Logger *slog.Logger
	seen   sync.Map
}

// Warn logs that model has no price, the first time it is called for that model; it reports whether it logged.
func (w *UnknownWarner) Warn(model string, attrs ...any) bool {
	if _, loaded := w.seen.LoadOrStore(model, true); loaded {
		return false
	}
	if w.Logger != nil {
		w.Logger.Warn("no price for model: its cost is unknown (add it with --prices or BATCHCTL_PRICES)",
			append([]any{"model", model}, attrs...)...)
	}
	return true
}

package poll

import (
	"cmp"
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

// periodicInsertOpts keep one periodic job (refresh, sweep) queued or running at a time, however slow a round is,
// ahead of the per-batch jobs (store.PriorityControl).
func periodicInsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: store.QueueBatches, Priority: store.PriorityControl, MaxAttempts: 1,
		UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: store.LiveJobStates}}
}

// refreshArgs is the periodic bulk refresh.
type refreshArgs struct{}

func (refreshArgs) Kind() string { return "batchctl_refresh" }

func (refreshArgs) InsertOpts() river.InsertOpts { return periodicInsertOpts() }

// refreshWorker runs Daemon.Refresh: about N/100 API calls for N batches in flight, instead of N GETs.
type refreshWorker struct {
	river.WorkerDefaults[refreshArgs]
	d *Daemon
}

func (w *refreshWorker) Work(ctx context.Context, _ *river.Job[refreshArgs]) error {
	_, err := w.d.Refresh(ctx)
	return err
}

// RefreshStats describes one bulk refresh round.
type RefreshStats struct {
	InFlight  int // batches in flight at the start of the round
	Updated   int // of which the round found and updated
	ListCalls int // GET /v1/batches calls made
}

// Refresh runs one bulk refresh round: it updates every batch in flight from its provider's batch list (newest
// first, 100 a page for OpenAI), stopping once it has seen them all or has paged past the oldest. A failed list call
// ends the round for that provider early without error: the per-batch poll jobs cover for it. Batches at a provider
// this daemon has no credentials for are left to their poll jobs, which say so.
func (d *Daemon) Refresh(ctx context.Context) (RefreshStats, error) {
	var st RefreshStats
	inFlight, err := d.store.ListInFlight(ctx, 1_000_000)
	if err != nil || len(inFlight) == 0 {
		return st, err
	}
	st.InFlight = len(inFlight)
	byProvider := map[string]map[string]*store.InFlight{}
	oldest := map[string]time.Time{}
	for i := range inFlight { // ListInFlight is oldest first
		b := &inFlight[i]
		name := cmp.Or(b.Provider, provider.OpenAI)
		if byProvider[name] == nil {
			byProvider[name], oldest[name] = map[string]*store.InFlight{}, b.CreatedAt
		}
		byProvider[name][b.BatchID] = b
	}
	for name, want := range byProvider {
		p, err := d.providers.Get(name)
		if err != nil {
			d.warnNoCredentials(name, len(want), err)
			continue
		}
		if err := d.refreshProvider(ctx, p, want, oldest[name], &st); err != nil {
			return st, err
		}
	}
	d.log.Debug("bulk refresh", "in_flight", st.InFlight, "updated", st.Updated, "list_calls", st.ListCalls)
	return st, nil
}

// warnNoCredentials says, at most once a minute per provider, that batches of a provider without credentials are
// skipped: they stay as they are, never marked failed, until a poller with the credentials runs.
func (d *Daemon) warnNoCredentials(name string, n int, err error) {
	d.noCredsMu.Lock()
	defer d.noCredsMu.Unlock()
	if d.noCredsAt == nil {
		d.noCredsAt = map[string]time.Time{}
	}
	if time.Since(d.noCredsAt[name]) < time.Minute {
		return
	}
	d.noCredsAt[name] = time.Now()
	d.log.Error("skipping batches in flight at a provider this poller has no credentials for; they are kept as they are",
		"provider", name, "batches", n, "error", err)
}

// refreshProvider is the round of one provider's batches in flight, want, the oldest created at oldest.
func (d *Daemon) refreshProvider(ctx context.Context, p provider.Provider, want map[string]*store.InFlight, oldest time.Time, st *RefreshStats) error {
	cursor := ""
	for len(want) > 0 {
		st.ListCalls++
		d.m.PollCalls.WithLabelValues("list").Inc()
		page, err := p.List(ctx, cursor)
		if err != nil {
			// The per-batch poll jobs cover for a missed round.
			d.m.PollErrors.WithLabelValues("list", batchapi.Classify(err).String()).Inc()
			d.log.Warn("bulk refresh: list batches", "provider", p.Name(), "error", batchapi.Message(err))
			return nil
		}
		// The batches the API has nothing new about are touched in one statement, the others written in one
		// transaction: two statements a page, not a transaction per batch.
		var (
			same    []string
			changed []store.Batch
		)
		for i := range page.Batches {
			row := &page.Batches[i]
			prev := want[row.BatchID]
			if prev == nil {
				continue
			}
			delete(want, row.BatchID)
			if unchanged(prev, row) {
				same = append(same, row.BatchID)
			} else {
				changed = append(changed, *row)
			}
			st.Updated++
		}
		if _, err := d.store.UpsertBatches(ctx, changed); err != nil {
			return err
		}
		if err := d.store.TouchBatches(ctx, same); err != nil {
			return err
		}
		if !page.HasMore || len(page.Batches) == 0 {
			break
		}
		// Pages are newest first: once past the oldest batch in flight (with a minute of clock slack), stop.
		if page.Batches[len(page.Batches)-1].CreatedAt.Before(oldest.Add(-time.Minute)) {
			break
		}
		cursor = page.Next
	}
	return nil
}

// unchanged reports whether the API's view of a batch adds nothing to its row: UpsertBatch would only move
// updated_at.
func unchanged(row *store.InFlight, api *store.Batch) bool {
	return row.Status == api.Status && row.RequestTotal == api.RequestTotal &&
		row.RequestCompleted == api.RequestCompleted && row.RequestFailed == api.RequestFailed &&
		row.OutputFileID == api.OutputFileID && row.ErrorFileID == api.ErrorFileID && row.Model == api.Model &&
		row.Endpoint == api.Endpoint && row.InputFileID == api.InputFileID && row.CreatedAt.Equal(api.CreatedAt)
}

// sweepArgs is the periodic search for stranded batches.
type sweepArgs struct{}

func (sweepArgs) Kind() string { return "batchctl_sweep" }

func (sweepArgs) InsertOpts() river.InsertOpts { return periodicInsertOpts() }

// sweepWorker re-enqueues poll jobs for batches in flight that have none, and load jobs for ended batches whose
// results are neither loaded nor queued: after a restart that lost them, jobs discarded after many errors, or rows
// inserted by hand.
type sweepWorker struct {
	river.WorkerDefaults[sweepArgs]
	d *Daemon
}

func (w *sweepWorker) Work(ctx context.Context, _ *river.Job[sweepArgs]) error {
	polls, err := w.d.store.EnqueueStrandedPolls(ctx, time.Now().Add(-w.d.cfg.Deadline))
	if err != nil {
		return err
	}
	loads, err := w.d.store.EnqueueStrandedLoads(ctx)
	if err != nil {
		return err
	}
	if len(polls)+len(loads) > 0 {
		w.d.log.Info("sweep re-enqueued stranded batches", "polls", polls, "loads", loads)
	}
	if w.d.cfg.Resubmit {
		ids, err := w.d.store.EnqueueResubmits(ctx, w.d.cfg.MaxAttempts)
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			w.d.log.Info("queued resubmissions", "batches", ids)
		}
	}
	return nil
}

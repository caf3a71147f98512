// Package admission is the single admission point of quota-aware batch creation. A batch whose model has an
// enqueued-token quota (store.SetQuota) is not created by whoever uploaded its file: the upload waits in the
// admission queue (store.Enqueue), and an Admitter creates queued batches in queue order, per model, while the
// model's estimated tokens in flight stay within its quota. Every submitter and poller sharing a database shares the
// quota; a Postgres advisory lock per model makes one admitter at a time, in all processes, admit a model.
package admission

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

// Calibration of the estimate. batchctl's prompt-token estimate runs high by design (it must never undercount), so
// a model's quota would stay partly empty. Once a model has CalibrationMinBatches loaded batches that have both an
// estimate and the API's prompt_tokens, each batch counts ceil(estimated_tokens × f) with
// f = min(1, ratio × CalibrationMargin), ratio = Σ prompt_tokens / Σ estimated_tokens over them; before that, f = 1.
// The margin covers batches whose real share of their estimate is above the average (a mix of prompts, a model
// whose tokenizer counts differently): at 1.15, a batch up to 15% worse than the average still fits. f never passes
// 1: calibration only ever gives back what the estimate overcounts, it never admits past the raw estimate.
const (
	CalibrationMargin     = 1.15
	CalibrationMinBatches = 3
)

// Factor is the calibration factor f of a model with calibration c (see CalibrationMargin).
func Factor(c store.Calibration) float64 {
	if c.Batches < CalibrationMinBatches {
		return 1
	}
	ratio, ok := c.Ratio()
	if !ok || ratio <= 0 { // no usage reported: nothing to learn from
		return 1
	}
	return min(1, ratio*CalibrationMargin)
}

// Cost is what a batch with estimate tokens counts against its quota under factor f: rounded up, as the store's
// sum of the batches in flight rounds each one.
func Cost(tokens int64, f float64) int64 {
	return int64(math.Ceil(float64(tokens) * f))
}

// Admitter creates queued batches in queue order while their model's estimated tokens in flight stay within its
// quota. A model without a quota has no limit: its queued rows (queued before the quota was unset) are created in
// order at once.
type Admitter struct {
	Store *store.Store
	// Providers are the batch APIs this process has credentials for; a queued row of another stays queued.
	Providers provider.Set
	Logger    *slog.Logger
}

func (a *Admitter) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

// Admit runs one admission pass for model ("" = every model with queued rows). It holds the model's admission lock
// (store.AdmissionLock) for the pass, so only one admitter in all processes admits a model at a time. It first
// reconciles rows left in state creating by an admitter that died (searching the batch list for the intent's batch
// before creating it), then creates queued rows FIFO while they fit; the first that does not fit ends the pass for
// its model (no overtaking). A row whose input file the API no longer knows becomes file_gone; a row whose
// estimate alone passes the quota can never be admitted: it keeps its place with an error, and the rows behind it
// go on. It returns the rows it created (or found created), and the errors of the models whose pass failed.
func (a *Admitter) Admit(ctx context.Context, model string) ([]store.QueuedBatch, error) {
	// Only models with rows to admit: a pass costs a connection of its own, and most calls (one after each load)
	// find nothing to do. A row queued after this read is the next pass's.
	models, err := a.Store.QueueModels(ctx)
	if err != nil {
		return nil, err
	}
	if model != "" {
		models = slices.DeleteFunc(models, func(m string) bool { return m != model })
	}
	var (
		created []store.QueuedBatch
		errs    []error
	)
	for _, m := range models {
		got, err := a.admitModel(ctx, m)
		created = append(created, got...)
		if err != nil {
			errs = append(errs, fmt.Errorf("admit batches of %s: %w", m, err))
		}
	}
	return created, errors.Join(errs...)
}

// admitModel is one model's pass, under its lock.
func (a *Admitter) admitModel(ctx context.Context, model string) (created []store.QueuedBatch, err error) {
	unlock, err := a.Store.AdmissionLock(ctx, model)
	if err != nil {
		return nil, err
	}
	defer unlock()
	log := a.log().With("model", model)

	// Rows an admitter left mid-create: their batch may exist. They count in flight until resolved, and a row that
	// cannot be resolved now ends the pass, so its tokens are never counted as free.
	creating, err := a.Store.QueueRows(ctx, model, store.QueueCreating)
	if err != nil {
		return nil, err
	}
	for _, q := range creating {
		got, ok, err := a.create(ctx, q, true, log)
		if err != nil {
			return created, err
		}
		if ok {
			created = append(created, got)
		}
	}

	limit, hasQuota, err := a.Store.Quota(ctx, model)
	if err != nil {
		return created, err
	}
	queued, err := a.Store.QueueRows(ctx, model, store.QueueQueued)
	if err != nil || len(queued) == 0 {
		return created, err
	}
	calib, err := a.Store.Calibration(ctx, model)
	if err != nil {
		return created, err
	}
	f := Factor(calib)
	inflight, err := a.Store.InflightTokens(ctx, model, f)
	if err != nil {
		return created, err
	}
	for _, q := range queued {
		cost := Cost(q.EstimatedTokens, f)
		if hasQuota && q.EstimatedTokens > limit {
			// Judged on the raw estimate, as the submit side judges it before upload (and Pending for
			// --exit-when-done): a quota raised later admits it in its place.
			msg := fmt.Sprintf("estimated %d prompt tokens, more than the quota of %s (%d): it can never be admitted; raise the quota (batchctl quota set) or split the batch",
				q.EstimatedTokens, model, limit)
			if q.Error != msg {
				log.Error("queued batch is larger than its model's quota; skipping it", "intent", q.Intent,
					"estimated_tokens", q.EstimatedTokens, "quota", limit)
				if err := a.Store.SetQueueError(ctx, q.QueueID, msg); err != nil {
					return created, err
				}
			}
			continue
		}
		if hasQuota && inflight+cost > limit {
			log.Debug("quota full; queue waits", "intent", q.Intent, "inflight", inflight, "cost", cost, "quota", limit,
				"factor", f)
			break
		}
		got, ok, err := a.create(ctx, q, q.CreateSentAt != nil, log)
		if err != nil {
			return created, err
		}
		if ok {
			created = append(created, got)
			inflight += cost
		}
	}
	return created, nil
}

// create creates (or, with mayExist, first looks for) the batch of row q and records it; it returns the row as
// created. It reports false without error for a row it set aside: file_gone, or refused by the API (back in the
// queue with the error). Any other error leaves the row as it is (creating, once the create may have been sent) and
// ends the pass.
func (a *Admitter) create(ctx context.Context, q store.QueuedBatch, mayExist bool, log *slog.Logger) (store.QueuedBatch, bool, error) {
	log = log.With("intent", q.Intent, "input_file_id", q.InputFileID)
	meta := maps.Clone(q.Metadata)
	if meta == nil {
		meta = map[string]string{}
	}
	meta[batchapi.MetaIntent] = q.Intent
	if q.SpoolSHA256 != "" {
		meta[batchapi.MetaSpoolSHA256] = q.SpoolSHA256
	}
	api, err := a.Providers.Get(q.Provider)
	if err != nil {
		return q, false, err
	}
	in := provider.Intent{
		Endpoint: q.Endpoint, InputFileID: q.InputFileID, Requests: q.Requests, Metadata: meta,
		Match: func(b *store.Batch) bool {
			return b.Metadata[batchapi.MetaIntent] == q.Intent && b.Metadata[batchapi.MetaSpoolSHA256] == q.SpoolSHA256
		},
		Since: q.QueuedAt,
		BeforeCreate: func(at time.Time) error {
			return a.Store.MarkCreating(ctx, q.QueueID, at)
		},
	}
	if q.CreateSentAt != nil {
		in.LastAttempt = *q.CreateSentAt
	}
	row, existing, err := api.Create(ctx, in, mayExist)
	if err != nil {
		return q, false, a.createFailed(ctx, api, q, err, log)
	}
	row.Model = cmp.Or(row.Model, q.Model) // the API names no model before validation
	row.Source, row.SpoolSHA256, row.EstimatedTokens = q.Source, q.SpoolSHA256, &q.EstimatedTokens
	if err := a.Store.MarkCreated(ctx, q.QueueID, row); err != nil {
		return q, false, err
	}
	log.Info("batch admitted", "batch_id", row.BatchID, "found_existing", existing, "estimated_tokens", q.EstimatedTokens)
	q.State, q.BatchID, q.Error = store.QueueCreated, row.BatchID, ""
	return q, true, nil
}

// createFailed sorts a failed create: a lost input file or a refusal (the row is set aside: nil), or an error that
// ends the pass.
func (a *Admitter) createFailed(ctx context.Context, api provider.Provider, q store.QueuedBatch, err error, log *slog.Logger) error {
	apiErr, isAPI := errors.AsType[*openai.Error](err)
	if !isAPI || ctx.Err() != nil {
		// Transient errors past their retries, an unfinished search (ErrReconcileIncomplete), a stop: the batch may
		// exist, so the row keeps its state, and its tokens stay counted.
		return err
	}
	kind := batchapi.Classify(err)
	if kind == batchapi.NotFound || (kind == batchapi.Permanent && strings.Contains(apiErr.Message, "No such File")) {
		exists, ferr := api.FileExists(ctx, q.InputFileID)
		if ferr == nil && !exists {
			log.Error("the API no longer knows this queued batch's input file; its batch cannot be created until a submit uploads it again",
				"error", batchapi.Message(err))
			return a.Store.MarkFileGone(ctx, q.QueueID, batchapi.Message(err))
		}
	}
	if kind == batchapi.Permanent || kind == batchapi.NotFound {
		// Refused: nothing was created by this attempt, and a search came first when an earlier one may have.
		log.Error("the API refused to create this queued batch; it stays queued with the error, and the queue goes on",
			"error", batchapi.Message(err))
		return a.Store.MarkQueued(ctx, q.QueueID, batchapi.Message(err))
	}
	return err
}

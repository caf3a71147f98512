package poll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/riverqueue/river"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

// loadWorker loads an ended batch's output and error files into the results table.
type loadWorker struct {
	river.WorkerDefaults[store.LoadResultsArgs]
	d *Daemon
}

// Timeout is unbounded at River's level: the worker keeps its own deadline, sized from the files it downloads
// (loadDeadline). River's rescuer leaves such a job alone; the lifeline rescues it when its poller dies.
func (w *loadWorker) Timeout(*river.Job[store.LoadResultsArgs]) time.Duration { return -1 }

func (w *loadWorker) Work(ctx context.Context, job *river.Job[store.LoadResultsArgs]) error {
	log := w.d.log.With("batch_id", job.Args.BatchID)
	dl := newLoadDeadline(ctx, w.d.cfg.LoadTimeout, w.d.cfg.MinLoadRate, log)
	loaded, err := w.load(dl.ctx, job, dl, log)
	if derr := dl.err(); derr != nil && ctx.Err() == nil {
		// An error, not a snooze: the load is retried with backoff, and River shows why.
		log.Warn("results load too slow; retrying", "error", derr)
		err = fmt.Errorf("load batch %s: %w", job.Args.BatchID, derr)
	}
	dl.stop()
	if err == nil && loaded != nil {
		// Outside the load's deadline: the results are committed, and the passes are not part of the load.
		w.d.afterLoad(ctx, *loaded)
		w.d.deleteFiles(ctx, loaded.RootBatchID)
	}
	return err
}

// load does the work of Work within the load's deadline dl, whose context ctx is. It returns the batch it loaded,
// nil when there was nothing to load.
func (w *loadWorker) load(ctx context.Context, job *river.Job[store.LoadResultsArgs], dl *loadDeadline, log *slog.Logger) (*store.Batch, error) {
	start := time.Now()
	id := job.Args.BatchID
	row, err := w.d.jobBatch(ctx, id)
	if err != nil {
		return nil, err
	}
	if row.ResultsLoadedAt != nil || row.ResultsLostAt != nil {
		return nil, nil
	}
	if !store.IsTerminal(row.Status) {
		return nil, river.JobCancel(fmt.Errorf("batch %s is %s, not ended: nothing to load", id, row.Status))
	}
	age := time.Since(row.CreatedAt)
	p, err := w.d.provider(row)
	if err != nil {
		return nil, w.d.apiFailure(ctx, "download", id, age, err)
	}
	if missingOutput(row) {
		if row, err = w.awaitOutput(ctx, row, log); err != nil {
			return nil, err
		}
	}
	row = w.d.outputExpiry(ctx, p, row, log)

	// The input file gives each request its line, so consumers can restore input order without submitter state. A
	// resubmission's requests take their line in the original (root) input, not in the child's own file.
	inputFileID := row.InputFileID
	if row.RootBatchID != row.BatchID {
		root, err := w.d.store.GetBatch(ctx, row.RootBatchID)
		if err != nil {
			return nil, shutdownAware(ctx, err)
		}
		inputFileID = root.InputFileID
	}
	src := loadSource{row: row, p: p}
	if src.pk, err = w.d.packedSourceOf(ctx, row, log); err != nil {
		return nil, shutdownAware(ctx, err)
	}
	// A provider that took the requests inline keeps no input file: the submitter recorded each request's line, and
	// its own custom_id where the API was sent another (request_ids). A batch with an input file is read from it,
	// without that query.
	switch {
	case src.pk != nil:
		// Each record's line is in the record-to-index map; the input file holds only the packed requests.
	case inputFileID == "":
		if src.ids, err = w.d.store.RequestIDs(ctx, row.SpoolSHA256); err != nil {
			return nil, shutdownAware(ctx, err)
		}
	default:
		if src.idx, err = w.inputIndex(ctx, p, inputFileID, dl); err != nil {
			if batchapi.Classify(err) == batchapi.NotFound {
				log.Warn("input file is gone; input_line stays null", "input_file_id", inputFileID)
			} else {
				return nil, w.d.apiFailure(ctx, "download", id, age, err)
			}
		}
		log.Debug("input index built", "input_file_id", inputFileID, "took", time.Since(start).Round(time.Millisecond))
	}

	c, err := w.copyVerified(ctx, dl, src, log)
	if c == nil {
		return nil, err
	}
	defer c.load.Rollback(context.Background())
	rows := c.load.Rows()
	c.load.SetPackedFailed(c.packedFailed)
	if err := c.load.MarkLoaded(ctx, c.usage.row()); err != nil {
		return nil, shutdownAware(ctx, err)
	}

	w.d.m.RowsLoaded.Add(float64(rows))
	c.usage.count(w.d.m)
	w.d.m.LoadDuration.Observe(time.Since(start).Seconds())
	if row.EndedAt != nil { // a batch's results are loaded once, so its duration is observed once
		w.d.m.BatchDuration.WithLabelValues(row.Status).Observe(row.EndedAt.Sub(row.CreatedAt).Seconds())
	}
	for outcome, n := range c.outcomes {
		w.d.m.Requests.WithLabelValues(outcome).Add(float64(n))
	}
	if c.lines != int64(row.RequestTotal) {
		w.d.m.LoadMismatches.Inc()
		log.Warn("loaded rows differ from the batch's request total", "rows", rows, "request_total", row.RequestTotal,
			"completed", row.RequestCompleted, "failed", row.RequestFailed)
	}
	log.Info("results loaded", "status", row.Status, "rows", rows, "took", time.Since(start).Round(time.Millisecond))
	return &row, nil
}

// missingOutput reports a completed batch that names no output file to read its answers from: one that says it
// answered requests, or one with requests and no file at all (neither output nor errors), which a load would
// record as loaded with no rows, every request silently missing. An emulator out of file descriptors once reported
// batches so: completed, 0 of 20 requests done, no file.
func missingOutput(row store.Batch) bool {
	if row.Status != store.StatusCompleted || row.OutputFileID != "" {
		return false
	}
	return row.RequestCompleted > 0 || (row.RequestTotal > 0 && row.ErrorFileID == "")
}

// awaitOutput handles a completed batch without its output file (missingOutput): the API sometimes reports
// completed before the output_file_id, and a load then would record the batch as loaded without its answers, for good (and a resubmission
// could pay for them again). It reads the batch again and stores what the API says (UpsertBatch keeps a file ID once
// known); while the file is still missing, the load snoozes for the minimum poll interval, until OutputGrace after the
// batch ended: then it loads what there is, loudly. It returns the row to load.
func (w *loadWorker) awaitOutput(ctx context.Context, row store.Batch, log *slog.Logger) (store.Batch, error) {
	id := row.BatchID
	if _, err := w.d.getBatch(ctx, row); err != nil {
		return row, err
	}
	row, err := w.d.jobBatch(ctx, id)
	if err != nil {
		return row, err
	}
	if !missingOutput(row) {
		log.Info("the output file of a completed batch has appeared", "output_file_id", row.OutputFileID)
		return row, nil
	}
	ended := row.UpdatedAt
	if row.EndedAt != nil {
		ended = *row.EndedAt
	}
	if since := time.Since(ended); since < w.d.cfg.OutputGrace {
		log.Info("batch completed without an output file yet; waiting for it", "completed", row.RequestCompleted,
			"ended", since.Round(time.Second), "grace", w.d.cfg.OutputGrace)
		return row, river.JobSnooze(w.d.cfg.Interval.Min)
	}
	w.d.m.LoadsWithoutOutput.Inc()
	log.Error("batch completed with answered requests but still no output file; loading what there is (only the error file's lines)",
		"completed", row.RequestCompleted, "ended", time.Since(ended).Round(time.Second), "grace", w.d.cfg.OutputGrace)
	return row, nil
}

// inputIndex streams the batch's input file into a custom_id → line index.
func (w *loadWorker) inputIndex(ctx context.Context, p provider.Provider, fileID string, dl *loadDeadline) (*inputIndex, error) {
	body, size, err := w.d.download(ctx, p, fileID)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	dl.add(size, fileID)
	return buildInputIndexSize(body, fileID, size)
}

// copyFile streams one output or error file into the load.
func (w *loadWorker) copyFile(ctx context.Context, dl *loadDeadline, c *copied, src loadSource, fileID string) error {
	body, size, err := w.d.download(ctx, src.p, fileID)
	if err != nil {
		return err
	}
	defer body.Close()
	dl.add(size, fileID)
	fs := &fileSource{dec: jsonl.NewOutputDecoder(body, fileID), batchID: src.row.BatchID, idx: src.idx, ids: src.ids,
		outcomes: c.outcomes, usage: c.usage, pk: src.pk, c: c}
	_, err = c.load.CopyResults(ctx, fs)
	return err
}

// fileSource turns an output or error file into result rows as COPY asks for them.
type fileSource struct {
	dec      *jsonl.OutputDecoder
	batchID  string
	idx      *inputIndex
	ids      map[string]store.RequestID // by the custom_id the API was sent; nil when it was the user's own
	outcomes map[string]int
	usage    *usageSum
	pk       *packedSource // the batch's packing, when its requests are packed
	c        *copied       // counts the lines and the packed records that failed

	// A packed batch's lines are read a chunk at a time (packedChunk), their records looked up together, and their
	// rows queued.
	queue      []store.Result
	qi         int
	chunk      []jsonl.OutputLine
	eof        bool
	cur        store.Result
	line, code int
	errJSON    []byte
	err        error
}

func (s *fileSource) Next() bool {
	if s.pk != nil {
		return s.nextPacked()
	}
	ol, err := s.dec.Next()
	if errors.Is(err, io.EOF) {
		return false
	}
	if err != nil {
		s.err = err
		return false
	}
	s.c.lines++
	s.cur = store.Result{BatchID: s.batchID, CustomID: ol.CustomID}
	if rid, ok := s.ids[ol.CustomID]; ok {
		s.line = rid.Line
		s.cur.InputLine = &s.line
		if rid.CustomID != ol.CustomID {
			s.cur.CustomID, s.cur.APICustomID = rid.CustomID, ol.CustomID
		}
	} else if line, ok := s.idx.lookup(ol.CustomID); ok {
		s.line = line
		s.cur.InputLine = &s.line
	}
	switch {
	case ol.Error != nil:
		if s.errJSON, err = json.Marshal(ol.Error); err != nil {
			s.err = err
			return false
		}
		s.cur.Error = s.errJSON
		s.outcomes[ol.Error.Code]++
	case ol.Response != nil:
		s.code = ol.Response.StatusCode
		s.cur.StatusCode = &s.code
		s.cur.Response = ol.Response.Body
		s.usage.add(ol.Response.Body)
		if s.code/100 == 2 {
			s.outcomes["ok"]++
		} else {
			s.outcomes["http_"+strconv.Itoa(s.code)]++
		}
	default:
		s.err = fmt.Errorf("line %d: neither a response nor an error", s.dec.Line())
		return false
	}
	return true
}

func (s *fileSource) Result() store.Result { return s.cur }
func (s *fileSource) Err() error           { return s.err }

// usageSum adds up the token usage of response bodies: chat and completions report prompt_tokens and
// completion_tokens, responses and the GPT image models input_tokens and output_tokens, embeddings prompt_tokens
// only; moderations and DALL·E report none. Cached tokens (prompt_tokens_details / input_tokens_details) are part of
// the prompt tokens, reasoning tokens (completion_tokens_details / output_tokens_details) part of the completion
// tokens, as the API counts them; so are an image edit's input image tokens (input_tokens_details.image_tokens) part
// of its input tokens. The price of the sum is in cost.go.
type usageSum struct {
	prompt, completion, total int64
	cached, reasoning         int64
	imageInput                int64 // input image tokens, priced apart by the API: see pricing.price
	seen                      bool
	pricing                   // the batch's model and prices; see cost.go
}

func (u *usageSum) add(body []byte) {
	usage := jsonl.Peek(body, "usage") // read here only: a view, not a copy
	if !usage.IsObject() {
		return
	}
	u.seen = true
	get := func(names ...string) int64 {
		for _, n := range names {
			if v := usage.Get(n); v.Exists() {
				return v.Int()
			}
		}
		return 0
	}
	p, c := get("prompt_tokens", "input_tokens"), get("completion_tokens", "output_tokens")
	cached := get("prompt_tokens_details.cached_tokens", "input_tokens_details.cached_tokens")
	if read := usage.Get("cache_read_input_tokens"); read.Exists() {
		// Anthropic's input_tokens leave out the prompt read from and written to the cache: counted in here, so
		// that prompt tokens mean the whole prompt for every provider, and cached ones the part read from the cache.
		cached = read.Int()
		p += cached + get("cache_creation_input_tokens")
	}
	u.prompt += p
	u.completion += c
	u.cached += cached
	u.reasoning += get("completion_tokens_details.reasoning_tokens", "output_tokens_details.reasoning_tokens")
	u.imageInput += get("input_tokens_details.image_tokens")
	if t := usage.Get("total_tokens"); t.Exists() {
		u.total += t.Int()
	} else {
		u.total += p + c
	}
	if u.bodyModel == "" && u.batchModel == "" { // an image body has no model: read it through once, not per row
		u.bodyModel = jsonl.Peek(body, "model").String()
	}
}

// row is the sum for the batch row, priced; nil columns when no response reported usage.
func (u *usageSum) row() store.Usage {
	if !u.seen {
		return store.Usage{}
	}
	return store.Usage{PromptTokens: &u.prompt, CompletionTokens: &u.completion, TotalTokens: &u.total,
		CachedTokens: &u.cached, ReasoningTokens: &u.reasoning, CostUSD: u.price(u.prompt, u.cached, u.imageInput, u.completion)}
}

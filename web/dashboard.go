package web

import (
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

//go:embed assets
var assets embed.FS

func assetsFS() fs.FS {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

func (s *Server) serveIndex(w http.ResponseWriter, _ *http.Request) {
	page, err := fs.ReadFile(assets, "assets/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(page)
}

// batchView is one batch as the page shows it. It holds no credentials: the batch-ID table has none.
type batchView struct {
	ID       string `json:"id"`
	Provider string `json:"provider"`
	Status   string `json:"status"`
	Endpoint string `json:"endpoint,omitempty"`
	Model    string `json:"model,omitempty"`
	Source   string `json:"source,omitempty"`

	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`

	CreatedAt  time.Time  `json:"created_at"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	AgeSeconds int64      `json:"age_seconds"`
	// WindowSeconds is the completion window (0: none, Azure); ExpiresAt its end; NearExpiry a batch in flight with
	// less than NearExpiry left.
	WindowSeconds int64      `json:"window_seconds"`
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	NearExpiry    bool       `json:"near_expiry"`

	RowsLoaded      *int       `json:"rows_loaded,omitempty"`
	ResultsLoadedAt *time.Time `json:"results_loaded_at,omitempty"`
	ResultsLostAt   *time.Time `json:"results_lost_at,omitempty"`
	Tokens          *int64     `json:"tokens,omitempty"`
	CostUSD         *string    `json:"cost_usd,omitempty"`

	Attempt        int      `json:"attempt"`
	RootBatchID    string   `json:"root_batch_id"`
	ParentBatchIDs []string `json:"parent_batch_ids,omitempty"`
	ResubmittedAs  string   `json:"resubmitted_as,omitempty"`
}

func (s *Server) view(b store.Batch, now time.Time) batchView {
	v := batchView{
		ID: b.BatchID, Provider: b.Provider, Status: b.Status, Endpoint: b.Endpoint, Model: b.Model, Source: b.Source,
		Total: b.RequestTotal, Completed: b.RequestCompleted, Failed: b.RequestFailed,
		CreatedAt: b.CreatedAt, EndedAt: b.EndedAt,
		RowsLoaded: b.ResultsCount, ResultsLoadedAt: b.ResultsLoadedAt, ResultsLostAt: b.ResultsLostAt,
		Tokens: b.Usage.TotalTokens, CostUSD: b.Usage.CostUSD,
		Attempt: b.Attempt, RootBatchID: b.RootBatchID, ParentBatchIDs: b.ParentBatchIDs, ResubmittedAs: b.ResubmittedAs,
	}
	end := now
	if b.EndedAt != nil {
		end = *b.EndedAt
	}
	v.AgeSeconds = int64(end.Sub(b.CreatedAt).Seconds())
	if b.Provider != provider.Azure {
		v.WindowSeconds = int64(CompletionWindow.Seconds())
		exp := b.CreatedAt.Add(CompletionWindow)
		v.ExpiresAt = &exp
		v.NearExpiry = !store.IsTerminal(b.Status) && exp.Sub(now) < NearExpiry
	}
	return v
}

// list is one page of a listing, with the cursor of the next page ("" on the last).
type list struct {
	Batches []batchView `json:"batches"`
	Next    string      `json:"next,omitempty"`
}

// statusTotal is store.StatusTotal as JSON.
type statusTotal struct {
	Status   string `json:"status"`
	Batches  int64  `json:"batches"`
	Requests int64  `json:"requests"`
	Rows     int64  `json:"rows"`
	Tokens   int64  `json:"tokens"`
	CostUSD  string `json:"cost_usd,omitempty"`
}

// dashboard is /api/dashboard: what the page shows, for its filter and cursors.
type dashboard struct {
	Now          time.Time     `json:"now"`
	Totals       []statusTotal `json:"totals"`
	Sources      []string      `json:"sources"`
	InFlight     *list         `json:"in_flight,omitempty"`
	Ended        *list         `json:"ended,omitempty"`
	AllowActions bool          `json:"allow_actions"`
	CSRF         string        `json:"csrf,omitempty"`
	RiverUI      bool          `json:"riverui"`
	Metrics      bool          `json:"metrics"`
}

// maxSources caps the filter's source list.
const maxSources = 200

// serveDashboard answers /api/dashboard?source=&status=&in_after=&ended_after=: the totals by status, the sources,
// and one page of the batches in flight and of the ended ones (a terminal status filter leaves the first out, a
// status in flight the second).
func (s *Server) serveDashboard(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	params := r.URL.Query()
	source, status := params.Get("source"), params.Get("status")
	inAfter, err1 := parseCursor(params.Get("in_after"))
	endedAfter, err2 := parseCursor(params.Get("ended_after"))
	if err := errors.Join(err1, err2); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := s.opts.Now()
	d := dashboard{Now: now, AllowActions: s.opts.AllowActions, RiverUI: s.riverUI != nil, Metrics: s.opts.Gatherer != nil}
	if s.opts.AllowActions {
		d.CSRF = s.csrf
	}
	q := store.DashboardQuery{Source: source, MaxSources: maxSources}
	if status == "" || !store.IsTerminal(status) {
		q.InFlight = &store.Page{Source: source, Status: status, After: inAfter, Limit: s.opts.PageSize}
	}
	if status == "" || store.IsTerminal(status) {
		q.Ended = &store.Page{Source: source, Status: status, After: endedAfter, Limit: s.opts.PageSize}
	}
	got, err := s.store.Dashboard(ctx, q)
	if err != nil {
		s.fail(w, err)
		return
	}
	d.Totals = make([]statusTotal, 0, len(got.Totals))
	for _, t := range got.Totals {
		d.Totals = append(d.Totals, statusTotal(t))
	}
	d.Sources = got.Sources
	if q.InFlight != nil {
		d.InFlight = s.listOf(got.InFlight, now, func(b store.Batch) time.Time { return b.CreatedAt })
	}
	if q.Ended != nil {
		d.Ended = s.listOf(got.Ended, now, func(b store.Batch) time.Time { return *b.EndedAt })
	}
	writeJSON(w, d)
}

// listOf turns a store page (one batch past the limit when there is more) into a list with its next cursor.
func (s *Server) listOf(bs []store.Batch, now time.Time, key func(store.Batch) time.Time) *list {
	l := &list{Batches: make([]batchView, 0, len(bs))}
	if len(bs) > s.opts.PageSize {
		bs = bs[:s.opts.PageSize]
		last := bs[len(bs)-1]
		l.Next = formatCursor(store.Cursor{At: key(last), BatchID: last.BatchID})
	}
	for _, b := range bs {
		l.Batches = append(l.Batches, s.view(b, now))
	}
	return l
}

// formatCursor writes a cursor as <unix microseconds>~<batch ID> (Postgres keeps microseconds).
func formatCursor(c store.Cursor) string {
	return strconv.FormatInt(c.At.UnixMicro(), 10) + "~" + c.BatchID
}

func parseCursor(s string) (store.Cursor, error) {
	if s == "" {
		return store.Cursor{}, nil
	}
	at, id, ok := strings.Cut(s, "~")
	us, err := strconv.ParseInt(at, 10, 64)
	if !ok || err != nil || id == "" {
		return store.Cursor{}, errors.New("invalid page cursor")
	}
	return store.Cursor{At: time.UnixMicro(us), BatchID: id}, nil
}

// batchDetail is /api/batches/{id}: the batch, its errors, its results by outcome and its lineage.
type batchDetail struct {
	Batch    batchView         `json:"batch"`
	Errors   []batchError      `json:"errors"`
	Outcomes []outcomeCount    `json:"outcomes"`
	Lineage  []batchView       `json:"lineage"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Files    map[string]string `json:"files,omitempty"`
}

// batchError is one line of the API's errors.data.
type batchError struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	Param   string `json:"param,omitempty"`
	Line    *int   `json:"line,omitempty"`
}

type outcomeCount struct {
	Outcome string `json:"outcome"`
	Count   int64  `json:"count"`
}

func (s *Server) serveBatch(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	b, err := s.store.GetBatch(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		http.Error(w, "no such batch", http.StatusNotFound)
		return
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	now := s.opts.Now()
	d := batchDetail{Batch: s.view(b, now), Errors: parseErrors(b.Errors), Metadata: b.Metadata,
		Files: map[string]string{}}
	for role, f := range map[string]string{"input": b.InputFileID, "output": b.OutputFileID, "error": b.ErrorFileID} {
		if f != "" {
			d.Files[role] = f
		}
	}
	outcomes, err := s.store.ResultOutcomes(ctx, id)
	if err != nil {
		s.fail(w, err)
		return
	}
	d.Outcomes = make([]outcomeCount, 0, len(outcomes))
	for _, o := range outcomes {
		d.Outcomes = append(d.Outcomes, outcomeCount(o))
	}
	lineage, err := s.store.Lineage(ctx, b.RootBatchID)
	if err != nil {
		s.fail(w, err)
		return
	}
	d.Lineage = make([]batchView, 0, len(lineage))
	for _, l := range lineage {
		d.Lineage = append(d.Lineage, s.view(l, now))
	}
	writeJSON(w, d)
}

// parseErrors reads the lines of a batch's errors object ({"data": [...]}, as OpenAI and Azure send it); anything
// else is shown as one line of its text.
func parseErrors(raw json.RawMessage) []batchError {
	if len(raw) == 0 || string(raw) == "null" {
		return []batchError{}
	}
	var e struct {
		Data []batchError `json:"data"`
	}
	if err := json.Unmarshal(raw, &e); err != nil || e.Data == nil {
		return []batchError{{Message: string(raw)}}
	}
	return e.Data
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// fail answers 500 for a database error, logged; the page shows the message.
func (s *Server) fail(w http.ResponseWriter, err error) {
	s.log.Error("dashboard", "error", err)
	http.Error(w, "database error: "+err.Error(), http.StatusInternalServerError)
}

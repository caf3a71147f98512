package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/store"
)

func init() { subcommands = append(subcommands, newStatusCmd) }

type statusOptions struct {
	global  *globalOptions
	streams *IOStreams
	ids     []string
	output  string
	limit   int
	watch   bool
	every   time.Duration
	now     func() time.Time
}

func newStatusCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &statusOptions{global: g, streams: streams, now: time.Now}
	cmd := &cobra.Command{
		Use:   "status [BATCH_ID...]",
		Short: "Show tracked batches: status, age, request counts, results loaded, tokens",
		Long: `Show batches from the batch-ID table: the named ones, or the most recent (--limit), with totals.

Columns: batch, status, age, requests (total/completed/failed), results loaded (rows, or - until loaded; "N (short
M)" when the files held M fewer rows than the request counts promise, even downloaded again; "lost: output expired"
when the output files expired before they were loaded: the results are gone), tokens (summed from the loaded
results), cost (USD at Batch API prices, stored when the results were loaded; - until then, or when the model has no
price), attempt (resubmissions count up from 1). The total cost adds the known costs
and ends in "+?" when a loaded batch's cost is unknown. --output json gives cost_usd exactly (null when unknown),
expected_rows, output_expires_at (when the output files expire, once a load looked) and results_lost_at.`,
		Example: `  batchctl status
  batchctl status batch_abc123 --output json
  batchctl status --watch --interval 5s`,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.ids = args
			return runStatus(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.output, "output", "o", "table", "table, or json (one object per batch)")
	f.IntVar(&opts.limit, "limit", 50, "without BATCH_IDs, show this many most recent batches (0: all)")
	f.BoolVarP(&opts.watch, "watch", "w", false, "redraw until interrupted")
	f.DurationVar(&opts.every, "interval", 2*time.Second, "refresh interval of --watch")
	return cmd
}

func runStatus(ctx context.Context, opts *statusOptions) error {
	if err := checkOutput(opts.output); err != nil {
		return err
	}
	s, err := opts.global.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	for {
		batches, err := s.ListBatches(ctx, opts.ids, opts.limit)
		if err != nil {
			return err
		}
		if len(opts.ids) > 0 && len(batches) < len(opts.ids) {
			return fmt.Errorf("%d of the %d batches named are not tracked: %w", len(opts.ids)-len(batches), len(opts.ids), store.ErrNotFound)
		}
		if opts.watch && opts.output == "table" {
			fmt.Fprint(opts.streams.Out, "\033[H\033[2J") // clear the screen
		}
		if opts.output == "json" {
			err = writeStatusJSON(opts.streams.Out, batches)
		} else {
			err = writeStatusTable(opts.streams.Out, batches, opts.now())
		}
		if err != nil || !opts.watch {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(opts.every):
		}
	}
}

// statusJSON is one batch in --output json.
type statusJSON struct {
	BatchID          string     `json:"batch_id"`
	Provider         string     `json:"provider"`
	Status           string     `json:"status"`
	Endpoint         string     `json:"endpoint,omitempty"`
	Model            string     `json:"model,omitempty"`
	Source           string     `json:"source,omitempty"`
	CreatedAt        time.Time  `json:"created_at"`
	EndedAt          *time.Time `json:"ended_at"`
	RequestTotal     int        `json:"request_total"`
	RequestCompleted int        `json:"request_completed"`
	RequestFailed    int        `json:"request_failed"`
	ResultsLoadedAt  *time.Time `json:"results_loaded_at"`
	ResultsCount     *int       `json:"results_count"`
	ExpectedRows     int        `json:"expected_rows"`
	// OutputExpiresAfter is the output_expires_after submit asked for, in seconds (absent: the API's default).
	OutputExpiresAfter int64             `json:"output_expires_after,omitempty"`
	OutputExpiresAt    *time.Time        `json:"output_expires_at"`
	ResultsLostAt      *time.Time        `json:"results_lost_at"`
	PromptTokens       *int64            `json:"prompt_tokens"`
	CompletionTokens   *int64            `json:"completion_tokens"`
	TotalTokens        *int64            `json:"total_tokens"`
	CachedTokens       *int64            `json:"cached_tokens"`
	ReasoningTokens    *int64            `json:"reasoning_tokens"`
	CostUSD            *json.Number      `json:"cost_usd"`
	RootBatchID        string            `json:"root_batch_id"`
	ParentBatchIDs     []string          `json:"parent_batch_ids,omitempty"`
	Attempt            int               `json:"attempt"`
	ResubmittedAs      string            `json:"resubmitted_as,omitempty"`
	Metadata           map[string]string `json:"metadata,omitempty"`
	Errors             json.RawMessage   `json:"errors,omitempty"`
}

func writeStatusJSON(w io.Writer, batches []store.Batch) error {
	enc := json.NewEncoder(w)
	for _, b := range batches {
		if err := enc.Encode(statusJSON{
			BatchID: b.BatchID, Provider: b.Provider, Status: b.Status, Endpoint: b.Endpoint, Model: b.Model, Source: b.Source,
			CreatedAt: b.CreatedAt, EndedAt: b.EndedAt, RequestTotal: b.RequestTotal, RequestCompleted: b.RequestCompleted,
			RequestFailed: b.RequestFailed, ResultsLoadedAt: b.ResultsLoadedAt, ResultsCount: b.ResultsCount,
			ExpectedRows: b.ExpectedRows(), OutputExpiresAfter: int64(b.OutputExpiresAfter / time.Second),
			OutputExpiresAt: b.OutputExpiresAt, ResultsLostAt: b.ResultsLostAt,
			PromptTokens: b.Usage.PromptTokens, CompletionTokens: b.Usage.CompletionTokens, TotalTokens: b.Usage.TotalTokens,
			CachedTokens: b.Usage.CachedTokens, ReasoningTokens: b.Usage.ReasoningTokens, CostUSD: usdNumber(b.Usage.CostUSD),
			RootBatchID: b.RootBatchID, ParentBatchIDs: b.ParentBatchIDs, Attempt: b.Attempt, ResubmittedAs: b.ResubmittedAs,
			Metadata: b.Metadata, Errors: b.Errors,
		}); err != nil {
			return err
		}
	}
	return nil
}

func writeStatusTable(w io.Writer, batches []store.Batch, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tSTATUS\tAGE\tREQUESTS (TOTAL/DONE/FAILED)\tLOADED\tTOKENS\tCOST (USD)\tATTEMPT")
	var total, done, failed, loaded int
	var tokens int64
	var spent costTotal
	for _, b := range batches {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d/%d\t%s\t%s\t%s\t%d\n", b.BatchID, b.Status, age(now.Sub(b.CreatedAt)),
			b.RequestTotal, b.RequestCompleted, b.RequestFailed, loadedCell(b), int64Cell(b.Usage.TotalTokens),
			usdCell(b.Usage.CostUSD), b.Attempt)
		if b.ResultsLoadedAt != nil {
			spent.add(b.Usage)
		}
		total, done, failed = total+b.RequestTotal, done+b.RequestCompleted, failed+b.RequestFailed
		if b.ResultsCount != nil {
			loaded += *b.ResultsCount
		}
		if b.Usage.TotalTokens != nil {
			tokens += *b.Usage.TotalTokens
		}
	}
	fmt.Fprintf(tw, "TOTAL (%d batches)\t\t\t%d/%d/%d\t%d\t%d\t%s\t\n", len(batches), total, done, failed, loaded, tokens, spent.cell())
	return tw.Flush()
}

// loadedCell is the LOADED column: the rows loaded, flagged when they fall short of the request counts, or why there
// are none.
func loadedCell(b store.Batch) string {
	switch {
	case b.ResultsLostAt != nil:
		return "lost: output expired"
	case b.ResultsLoadedAt == nil || b.ResultsCount == nil:
		return "-"
	case *b.ResultsCount < b.ExpectedRows():
		return fmt.Sprintf("%d (short %d)", *b.ResultsCount, b.ExpectedRows()-*b.ResultsCount)
	}
	return strconv.Itoa(*b.ResultsCount)
}

func int64Cell(v *int64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatInt(*v, 10)
}

// age prints a duration the way people read ages: 45s, 12m, 3h05m, 2d04h.
func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

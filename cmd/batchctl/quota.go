package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/store"
)

func init() { subcommands = append(subcommands, newQuotaCmd) }

type quotaOptions struct {
	global  *globalOptions
	streams *IOStreams
	output  string
	now     func() time.Time
	// set and unset
	model  string
	tokens int64
}

func newQuotaCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &quotaOptions{global: g, streams: streams, now: time.Now}
	cmd := &cobra.Command{
		Use:   "quota",
		Short: "Show, set and unset the per-model enqueued-token quotas that admission keeps full, never past",
		Long: `Show every model with a quota or with batches waiting in the admission queue: its limit, the estimated
tokens of its batches in flight (not yet ended, or being created), the batches and tokens queued, the
oldest queued batch's age, and the estimate's calibration (reported prompt tokens / estimated tokens
over the model's loaded batches; admission trusts it from 3 batches on, with a 15% margin).

A model with a quota has its batches created by the single admission point (the pollers' admission
passes), in queue order, only while its estimated tokens in flight stay within the quota. The quota
lives in the database: every submitter and poller of the schema shares it.`,
		Example: `  batchctl quota
  batchctl quota -o json
  batchctl quota set gpt-4o-mini 2000000
  batchctl quota unset gpt-4o-mini`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runQuota(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVarP(&opts.output, "output", "o", "table", "table, or json (one object per model)")

	set := &cobra.Command{
		Use:   "set MODEL TOKENS",
		Short: "Set a model's enqueued-token quota (replacing any earlier one)",
		Long: `Set MODEL's enqueued-token quota: the organisation's limit of prompt tokens enqueued for the model
at once, as the API's limits page states it. Batches of MODEL queued from then on are created only
while their estimated tokens in flight fit.`,
		Example: `  batchctl quota set gpt-4o-mini 2000000`,
		Args: usageArgs(func(_ *cobra.Command, args []string) error {
			if len(args) != 2 {
				return fmt.Errorf("want MODEL and TOKENS, got %d arguments", len(args))
			}
			n, err := strconv.ParseInt(args[1], 10, 64)
			if err != nil || n <= 0 {
				return fmt.Errorf("TOKENS %q: want a positive whole number", args[1])
			}
			opts.model, opts.tokens = args[0], n
			return nil
		}),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runQuotaSet(cmd.Context(), opts)
		},
	}
	unset := &cobra.Command{
		Use:   "unset MODEL",
		Short: "Remove a model's quota: its batches are no longer held back",
		Long: `Remove MODEL's quota. Batches of MODEL still queued are created by the next admission pass, in
order, without a limit.`,
		Example: `  batchctl quota unset gpt-4o-mini`,
		Args:    usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.model = args[0]
			return runQuotaUnset(cmd.Context(), opts)
		},
	}
	cmd.AddCommand(set, unset)
	return cmd
}

func runQuota(ctx context.Context, opts *quotaOptions) error {
	if err := checkOutput(opts.output); err != nil {
		return err
	}
	s, err := opts.global.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	report, err := s.QuotaReport(ctx)
	if err != nil {
		return err
	}
	if opts.output == "json" {
		return writeQuotaJSON(opts.streams.Out, report)
	}
	return writeQuotaTable(opts.streams.Out, report, opts.now())
}

func runQuotaSet(ctx context.Context, opts *quotaOptions) error {
	s, err := opts.global.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.SetQuota(ctx, opts.model, opts.tokens); err != nil {
		return err
	}
	opts.global.Logger().Info("quota set", "model", opts.model, "tokens", opts.tokens)
	return nil
}

func runQuotaUnset(ctx context.Context, opts *quotaOptions) error {
	s, err := opts.global.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.UnsetQuota(ctx, opts.model); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("model %s has no quota: %w", opts.model, store.ErrNotFound)
	} else if err != nil {
		return err
	}
	opts.global.Logger().Info("quota removed", "model", opts.model)
	return nil
}

// quotaJSON is one model in --output json. token_limit is null for a model without a quota, estimate_ratio until
// the model has a loaded batch with both counts.
type quotaJSON struct {
	Model          string     `json:"model"`
	TokenLimit     *int64     `json:"token_limit"`
	InflightTokens int64      `json:"inflight_tokens"`
	QueuedBatches  int        `json:"queued_batches"`
	QueuedTokens   int64      `json:"queued_tokens"`
	OldestQueuedAt *time.Time `json:"oldest_queued_at"`
	EstimateRatio  *float64   `json:"estimate_ratio"`
}

func writeQuotaJSON(w io.Writer, report []store.QuotaRow) error {
	enc := json.NewEncoder(w)
	for _, r := range report {
		q := quotaJSON{Model: r.Model, InflightTokens: r.InflightTokens, QueuedBatches: r.QueuedBatches,
			QueuedTokens: r.QueuedTokens, OldestQueuedAt: r.OldestQueuedAt}
		if r.TokenLimit > 0 {
			q.TokenLimit = &r.TokenLimit
		}
		if ratio, ok := r.Calibration.Ratio(); ok {
			q.EstimateRatio = &ratio
		}
		if err := enc.Encode(q); err != nil {
			return err
		}
	}
	return nil
}

func writeQuotaTable(w io.Writer, report []store.QuotaRow, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tQUOTA\tIN FLIGHT\tQUEUED\tQUEUED TOKENS\tOLDEST QUEUED\tESTIMATE RATIO")
	for _, r := range report {
		limit := "-"
		if r.TokenLimit > 0 {
			limit = strconv.FormatInt(r.TokenLimit, 10)
		}
		oldest := "-"
		if r.OldestQueuedAt != nil {
			oldest = age(now.Sub(*r.OldestQueuedAt))
		}
		ratio := "-"
		if v, ok := r.Calibration.Ratio(); ok {
			ratio = fmt.Sprintf("%.2f (%d batches)", v, r.Calibration.Batches)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\n", r.Model, limit, r.InflightTokens, r.QueuedBatches, r.QueuedTokens,
			oldest, ratio)
	}
	return tw.Flush()
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/cost"
	"github.com/batchctl/batchctl/store"
)

func init() { subcommands = append(subcommands, newCostCmd) }

type costOptions struct {
	global  *globalOptions
	streams *IOStreams
	by      string
	since   time.Duration
	output  string
	now     func() time.Time
}

func newCostCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &costOptions{global: g, streams: streams, now: time.Now}
	cmd := &cobra.Command{
		Use:   "cost",
		Short: "Show what loaded batches cost, by model, source, day or batch",
		Long: `Sum the cost of the batches whose results are loaded, as the poller stored it with each load
(batches.cost_usd: USD at the Batch API prices of its price table, exact to the token).

Each line: the group (model, source, day (UTC, of the batch's creation) or batch_id), batches, requests (result rows
loaded), input_tokens (cached included), cached_tokens, output_tokens (reasoning included), cost_usd and
sync_cost_usd (the same tokens at synchronous prices: twice the Batch API's).

A model without a price has no cost, never 0: a group with such a batch gets cost_usd null (a partial sum would
understate it) and unpriced_batches counts them; add the price with --prices or BATCHCTL_PRICES on the poller.
A batch loaded without any usage (nothing answered) costs 0.`,
		Example: `  batchctl cost
  batchctl cost --by day --since 168h
  batchctl cost --by source -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCost(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.by, "by", string(store.CostByModel), "group by model, source, day or batch")
	f.DurationVar(&opts.since, "since", 0, "only batches created this long ago or later, e.g. 24h (0: all)")
	f.StringVarP(&opts.output, "output", "o", "table", "table, or json (one object per group)")
	return cmd
}

func runCost(ctx context.Context, opts *costOptions) error {
	if err := checkOutput(opts.output); err != nil {
		return err
	}
	by := store.CostBy(opts.by)
	switch by {
	case store.CostByModel, store.CostBySource, store.CostByDay, store.CostByBatch:
	default:
		return usageError{fmt.Errorf("--by %q: want model, source, day or batch", opts.by)}
	}
	if opts.since < 0 {
		return usageError{fmt.Errorf("--since %v: want a positive duration", opts.since)}
	}
	var since time.Time
	if opts.since > 0 {
		since = opts.now().Add(-opts.since)
	}
	s, err := opts.global.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	groups, err := s.CostReport(ctx, by, since)
	if err != nil {
		return err
	}
	lines, err := costLines(by, groups)
	if err != nil {
		return err
	}
	if opts.output == "json" {
		enc := json.NewEncoder(opts.streams.Out)
		for _, l := range lines {
			if err := enc.Encode(l); err != nil {
				return err
			}
		}
		return nil
	}
	return writeCostTable(opts.streams.Out, by, lines)
}

// costLine is one group in --output json; the group's key is named after the grouping.
type costLine struct {
	key             string
	keyName         string
	Batches         int64        `json:"batches"`
	Requests        int64        `json:"requests"`
	InputTokens     int64        `json:"input_tokens"`
	CachedTokens    int64        `json:"cached_tokens"`
	OutputTokens    int64        `json:"output_tokens"`
	CostUSD         *json.Number `json:"cost_usd"`
	SyncCostUSD     *json.Number `json:"sync_cost_usd"`
	UnpricedBatches int64        `json:"unpriced_batches"`
	// EstimateRatio is the real cost over submit's estimate (estimated_cost_usd), over the batches that have both.
	EstimateRatio *float64 `json:"estimate_ratio"`
}

// MarshalJSON puts the group's key first, under its name: model, source, day or batch_id.
func (l costLine) MarshalJSON() ([]byte, error) {
	type fields costLine
	rest, err := json.Marshal(fields(l))
	if err != nil {
		return nil, err
	}
	var key any = l.key
	if l.key == "" {
		key = nil
	}
	head, err := json.Marshal(map[string]any{l.keyName: key})
	if err != nil {
		return nil, err
	}
	return append(append(head[:len(head)-1], ','), rest[1:]...), nil
}

func costLines(by store.CostBy, groups []store.CostGroup) ([]costLine, error) {
	keyName := string(by)
	if by == store.CostByBatch {
		keyName = "batch_id"
	}
	out := make([]costLine, 0, len(groups))
	for _, g := range groups {
		l := costLine{key: g.Key, keyName: keyName, Batches: g.Batches, Requests: g.Requests, InputTokens: g.InputTokens,
			CachedTokens: g.CachedTokens, OutputTokens: g.OutputTokens, UnpricedBatches: g.Unpriced, EstimateRatio: g.EstimateRatio}
		if g.CostUSD != nil {
			p, err := cost.ParseUSD(*g.CostUSD)
			if err != nil {
				return nil, fmt.Errorf("cost of %s %s: %w", keyName, g.Key, err)
			}
			sync, err := p.Sync()
			if err != nil {
				return nil, fmt.Errorf("sync cost of %s %s: %w", keyName, g.Key, err)
			}
			c, sc := json.Number(p.USD()), json.Number(sync.USD())
			l.CostUSD, l.SyncCostUSD = &c, &sc
		}
		out = append(out, l)
	}
	return out, nil
}

func writeCostTable(w io.Writer, by store.CostBy, lines []costLine) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s\tBATCHES\tREQUESTS\tINPUT\tCACHED\tOUTPUT\tCOST (USD)\tSYNC COST (USD)\tCOST/ESTIMATE\t\n", map[store.CostBy]string{
		store.CostByModel: "MODEL", store.CostBySource: "SOURCE", store.CostByDay: "DAY", store.CostByBatch: "BATCH"}[by])
	var total costLine
	var spent, spentSync costTotal
	for _, l := range lines {
		key := l.key
		if key == "" {
			key = "-"
		}
		ratio := "-"
		if l.EstimateRatio != nil {
			ratio = fmt.Sprintf("%.2f", *l.EstimateRatio)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t\n", key, l.Batches, l.Requests, l.InputTokens, l.CachedTokens,
			l.OutputTokens, numberCell(l.CostUSD), numberCell(l.SyncCostUSD), ratio)
		total.Batches += l.Batches
		total.Requests += l.Requests
		total.InputTokens += l.InputTokens
		total.CachedTokens += l.CachedTokens
		total.OutputTokens += l.OutputTokens
		spent.addNumber(l.CostUSD)
		spentSync.addNumber(l.SyncCostUSD)
	}
	fmt.Fprintf(tw, "TOTAL\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\t\n", total.Batches, total.Requests, total.InputTokens,
		total.CachedTokens, total.OutputTokens, spent.cell(), spentSync.cell())
	return tw.Flush()
}

func numberCell(n *json.Number) string {
	if n == nil {
		return "-"
	}
	s := n.String()
	return usdCell(&s)
}

// addNumber adds a group's cost; nil is an unknown cost.
func (c *costTotal) addNumber(n *json.Number) {
	if n == nil {
		c.unknown = true
		return
	}
	s := n.String()
	zero := int64(0)
	c.add(store.Usage{CostUSD: &s, PromptTokens: &zero})
}

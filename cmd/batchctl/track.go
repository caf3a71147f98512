package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
	"github.com/batchctl/batchctl/submit"
)

func init() { subcommands = append(subcommands, newTrackCmd) }

type trackOptions struct {
	global   *globalOptions
	streams  *IOStreams
	ids      []string
	provider string // of bare batch IDs that do not name it
}

func newTrackCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &trackOptions{global: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "track [BATCH_ID...]",
		Short: "Insert batches into the batch-ID table and queue their poll jobs",
		Long: `Track batches created elsewhere: insert each into the batch-ID table and enqueue its River poll job in one
transaction, as 'batchctl submit' does itself when it has a database.

Batch IDs come from the arguments, or else from stdin: the JSON lines 'batchctl submit' prints (their
input_file_id, source, spool_sha256, endpoint, model and request count are kept) or bare batch IDs, one a line.
Tracking a batch twice is harmless. Prints one JSON line per batch: {"batch_id": ..., "tracked": true} for a new
row, false for one already tracked.

A submit line names its provider. A bare ID msgbatch_... is Anthropic's; any other bare ID is --provider's.`,
		Example: `  # submitters without database access, a tracker beside the database
  batchctl submit --model gpt-4o-mini big.jsonl | ssh db-host batchctl track

  batchctl track batch_abc123 batch_def456
  batchctl track --provider azure batch_0a1b2c
  batchctl track msgbatch_013Zva2CMHLNnXjNJJKqJ2EF`,
		Args: usageArgs(func(_ *cobra.Command, args []string) error {
			for _, id := range args {
				if err := checkBatchID(id); err != nil {
					return err
				}
			}
			return nil
		}),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.ids = args
			if err := provider.Check(opts.provider); err != nil {
				return usageError{err}
			}
			return runTrack(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.provider, "provider", envOr(g.getenv, "BATCHCTL_PROVIDER", provider.OpenAI),
		"provider of bare batch IDs: openai or azure (msgbatch_ IDs are Anthropic's) (env BATCHCTL_PROVIDER)")
	return cmd
}

// batchIDPattern is what the APIs' batch IDs look like: batch_ (OpenAI, Azure) or msgbatch_ (Anthropic), then
// letters, digits, _ or -.
var batchIDPattern = regexp.MustCompile(`^(msg)?batch_[A-Za-z0-9_-]+$`)

// checkBatchID is track's one test of a batch ID, for arguments and stdin lines alike.
func checkBatchID(id string) error {
	if !batchIDPattern.MatchString(id) {
		return fmt.Errorf("%q is not a batch ID (batch_... or msgbatch_...)", id)
	}
	return nil
}

// bareProvider is the provider of a bare batch ID: Anthropic's IDs say so; the others are def's.
func bareProvider(id, def string) string {
	if strings.HasPrefix(id, "msgbatch_") {
		return provider.Anthropic
	}
	return def
}

func runTrack(ctx context.Context, opts *trackOptions) error {
	s, err := opts.global.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	t := &tracker{store: s, out: opts.streams.Out, provider: opts.provider}
	if len(opts.ids) > 0 {
		for _, id := range opts.ids {
			if err := t.track(ctx, store.Batch{BatchID: id, Provider: bareProvider(id, opts.provider)}); err != nil {
				return err
			}
		}
		return nil
	}
	return t.trackLines(ctx, opts.streams.In, "stdin")
}

// tracker records batches in the batch-ID table and reports each on out.
type tracker struct {
	store    *store.Store
	out      io.Writer
	provider string // of bare batch IDs
}

// trackLines tracks every line of r: a submit JSON line or a bare batch ID.
func (t *tracker) trackLines(ctx context.Context, r io.Reader, source string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		b, skip, err := parseTrackLine(text)
		if err != nil {
			return inputError{jsonl.Errorf(source, line, "%s", err)}
		}
		if skip {
			continue
		}
		if b.Provider == "" {
			b.Provider = bareProvider(b.BatchID, t.provider)
		}
		if err := t.track(ctx, b); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", source, err)
	}
	return nil
}

// parseTrackLine reads one non-empty line of track's input: a batchctl submit JSON line or a bare batch ID. skip is
// set for a dry run's line and a queued batch's, which name no batch (the poller tracks a queued batch as it
// creates it).
func parseTrackLine(text string) (b store.Batch, skip bool, err error) {
	if strings.HasPrefix(text, "{") {
		var c submit.Created
		if err := json.Unmarshal([]byte(text), &c); err != nil {
			return b, false, fmt.Errorf("not a batchctl submit line: %v", err)
		}
		if c.DryRun || c.Queued {
			return b, true, nil
		}
		b = batchFromCreated(c)
	} else {
		b.BatchID = text
	}
	if err := checkBatchID(b.BatchID); err != nil {
		return b, false, err
	}
	return b, false, nil
}

// track inserts the row and the poll job. Until the poller's first refresh, a batch of unknown status is recorded
// as validating, the status every batch starts in.
func (t *tracker) track(ctx context.Context, b store.Batch) error {
	if b.BatchID == "" {
		return errors.New("empty batch ID")
	}
	if b.Status == "" {
		b.Status = store.StatusValidating
	}
	inserted, err := t.store.TrackBatch(ctx, b)
	if err != nil {
		return err
	}
	line, err := json.Marshal(struct {
		BatchID string `json:"batch_id"`
		Tracked bool   `json:"tracked"`
	}{b.BatchID, inserted})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(t.out, "%s\n", line)
	return err
}

// batchFromCreated is the batch-ID row of a batch submit created.
func batchFromCreated(c submit.Created) store.Batch {
	b := store.Batch{
		BatchID: c.BatchID, Provider: c.Provider, Status: store.StatusValidating, Endpoint: c.Endpoint, Model: c.Model,
		InputFileID: c.InputFileID, RequestTotal: c.Requests, Source: c.Source, SpoolSHA256: c.SpoolSHA256,
		OutputExpiresAfter: time.Duration(c.OutputExpiresAfter) * time.Second,
	}
	if c.EstimatedTokens > 0 {
		b.EstimatedTokens = &c.EstimatedTokens
	}
	if c.EstimatedCostUSD != nil && c.EstimatedCostUSD.Known {
		usd := c.EstimatedCostUSD.Pico.USD()
		b.EstimatedCostUSD = &usd
	}
	return b
}

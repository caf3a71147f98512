package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/pack"
	"github.com/batchctl/batchctl/poll"
)

func init() { subcommands = append(subcommands, newResubmitCmd) }

type resubmitOptions struct {
	global            *globalOptions
	streams           *IOStreams
	api               *apiOptions
	ids               []string
	all               bool
	maxAttempts       int
	resubmitPack      int
	tokenLimitBackoff time.Duration
	dir               string
}

func newResubmitCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &resubmitOptions{global: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "resubmit [BATCH_ID...]",
		Short: "Send again the requests of ended batches that failed for a retryable cause",
		Long: `For each ended batch whose results are loaded, build a child batch from the request lines of its original
input file (streamed from the Files API) whose result is missing or failed for a retryable cause: batch_expired,
a 5xx or 429 answer, server_error, rate_limit_exceeded. A batch that failed with token_limit_exceeded is sent
again whole, once --token-limit-backoff has passed since it failed. Successes and final failures (a 400 such as
context_length_exceeded, a user's cancel, failed validation) are never resent.

The child records its parent and attempt number; results exports follow the lineage and show the final outcome
of each request. A batch at attempt --max-attempts is not resubmitted: its failures stay. Each parent gets at most
one child, even across crashes and concurrent runs (the child is found again by its metadata). 'batchctl poll
--resubmit' does the same automatically.

Prints one JSON line per batch considered: {"batch_id", "resubmitted_as", "requests", "skipped"}.`,
		Example: `  batchctl resubmit batch_abc123
  batchctl resubmit --all --max-attempts 5`,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.ids = args
			return runResubmit(cmd.Context(), opts)
		},
	}
	opts.api = addAPIFlags(cmd, g)
	f := cmd.Flags()
	f.BoolVar(&opts.all, "all", false, "every ended batch that may have requests to resend")
	f.IntVar(&opts.maxAttempts, "max-attempts", poll.DefaultMaxAttempts, "attempts a request gets in all, the first submission included")
	f.DurationVar(&opts.tokenLimitBackoff, "token-limit-backoff", poll.DefaultTokenLimitBackoff, "wait after a token_limit_exceeded failure before sending the batch again")
	f.IntVar(&opts.resubmitPack, "resubmit-pack", poll.DefaultResubmitPack, "records a request when failed packed records (submit --pack) are sent again (1: unpacked, one record a request)")
	f.StringVar(&opts.dir, "dir", "", "directory for the children's request files while they upload (default the system temp dir)")
	return cmd
}

func runResubmit(ctx context.Context, opts *resubmitOptions) error {
	if len(opts.ids) == 0 && !opts.all {
		return usageError{errors.New("name batches, or pass --all")}
	}
	if len(opts.ids) > 0 && opts.all {
		return usageError{errors.New("--all resubmits every candidate: name no batch with it")}
	}
	if opts.resubmitPack < 0 || opts.resubmitPack > pack.MaxSize {
		return usageError{fmt.Errorf("--resubmit-pack %d: want 1 to %d records a request", opts.resubmitPack, pack.MaxSize)}
	}
	providers, err := opts.api.providers(opts.global.Logger())
	if err != nil {
		return err
	}
	s, err := opts.global.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	log := opts.global.Logger()
	r := &poll.Resubmitter{Store: s, Providers: providers, Logger: log,
		MaxAttempts: opts.maxAttempts, TokenLimitBackoff: opts.tokenLimitBackoff, Dir: opts.dir, Pack: opts.resubmitPack}

	ids := opts.ids
	if opts.all {
		if ids, err = s.ResubmitCandidates(ctx, opts.maxAttempts); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(opts.streams.Out)
	var errs []error
	for _, id := range ids {
		res, err := r.Resubmit(ctx, id)
		if errors.Is(err, poll.ErrNotYet) {
			res.Skipped, err = err.Error(), nil
		}
		if err != nil {
			log.Error("resubmission failed", "batch_id", id, "error", err)
			errs = append(errs, err)
			continue
		}
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
)

func init() { subcommands = append(subcommands, newCancelCmd) }

type cancelOptions struct {
	global  *globalOptions
	streams *IOStreams
	api     *apiOptions
	ids     []string
	// provider is the provider of a batch the batch-ID table does not know.
	provider string
}

func newCancelCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &cancelOptions{global: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "cancel BATCH_ID...",
		Short: "Cancel batches at the API and record it; the poller then loads their partial output",
		Long: `Cancel each batch at the API (it goes to cancelling, then cancelled within about 10 minutes) and record
the new status in the batch-ID table, tracking the batch if it was not. The poller loads what the batch answered
before it stopped; requests it never ran come back as error rows. Prints one JSON line per batch.

A tracked batch is cancelled at its own provider; an untracked one at --provider.`,
		Example: `  batchctl cancel batch_abc123 batch_def456
  ANTHROPIC_API_KEY=... batchctl cancel --provider anthropic msgbatch_013Zva2CMHLNnXjNJJKqJ2EF`,
		Args: usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.ids = args
			return runCancel(cmd.Context(), opts)
		},
	}
	opts.api = addAPIFlags(cmd, g)
	cmd.Flags().StringVar(&opts.provider, "provider", envOr(g.getenv, "BATCHCTL_PROVIDER", provider.OpenAI), "provider of batches the batch-ID table does not know: openai, azure or anthropic (env BATCHCTL_PROVIDER)")
	return cmd
}

func runCancel(ctx context.Context, opts *cancelOptions) error {
	if err := provider.Check(opts.provider); err != nil {
		return usageError{err}
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
	enc := json.NewEncoder(opts.streams.Out)
	for _, id := range opts.ids {
		name := opts.provider
		if known, err := s.GetBatch(ctx, id); err == nil {
			name = known.Provider
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		p, err := providers.Get(name)
		if err != nil {
			return fmt.Errorf("cancel %s: %w", id, err)
		}
		row, err := p.Cancel(ctx, id)
		if err != nil {
			return fmt.Errorf("cancel %s: %w", id, err)
		}
		// Tracking first gives an untracked batch its row and poll job; the upsert then records the cancel.
		if _, err := s.TrackBatch(ctx, row); err != nil {
			return err
		}
		if _, err := s.UpsertBatch(ctx, row); err != nil {
			return err
		}
		opts.global.Logger().Info("cancel requested", "batch_id", id, "status", row.Status, "provider", p.Name())
		if err := enc.Encode(struct {
			BatchID  string `json:"batch_id"`
			Provider string `json:"provider"`
			Status   string `json:"status"`
		}{row.BatchID, p.Name(), row.Status}); err != nil {
			return err
		}
	}
	return nil
}

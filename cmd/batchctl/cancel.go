package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/batchapi"
)

func init() { subcommands = append(subcommands, newCancelCmd) }

type cancelOptions struct {
	global  *globalOptions
	streams *IOStreams
	api     *apiOptions
	ids     []string
}

func newCancelCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &cancelOptions{global: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "cancel BATCH_ID...",
		Short: "Cancel batches at the API and record it; the poller then loads their partial output",
		Long: `Cancel each batch at the API (it goes to cancelling, then cancelled within about 10 minutes) and record
the new status in the batch-ID table, tracking the batch if it was not. The poller loads what the batch answered
before it stopped; requests it never ran come back as error rows. Prints one JSON line per batch.`,
		Example: `  batchctl cancel batch_abc123 batch_def456`,
		Args:    usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.ids = args
			return runCancel(cmd.Context(), opts)
		},
	}
	opts.api = addAPIFlags(cmd, g)
	return cmd
}

func runCancel(ctx context.Context, opts *cancelOptions) error {
	api, err := opts.api.client()
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
		b, err := api.Batches.Cancel(ctx, id)
		if err != nil {
			return fmt.Errorf("cancel %s: %w", id, err)
		}
		row := batchapi.Row(b)
		// Tracking first gives an untracked batch its row and poll job; the upsert then records the cancel.
		if _, err := s.TrackBatch(ctx, row); err != nil {
			return err
		}
		if _, err := s.UpsertBatch(ctx, row); err != nil {
			return err
		}
		opts.global.Logger().Info("cancel requested", "batch_id", id, "status", row.Status)
		if err := enc.Encode(struct {
			BatchID string `json:"batch_id"`
			Status  string `json:"status"`
		}{row.BatchID, row.Status}); err != nil {
			return err
		}
	}
	return nil
}

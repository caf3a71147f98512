package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/submit"
)

func init() { subcommands = append(subcommands, newIntentsCmd) }

type intentsOptions struct {
	global   *globalOptions
	streams  *IOStreams
	spoolDir string
	output   string
	all      bool
	refs     []string
}

func newIntentsCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &intentsOptions{global: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "intents",
		Short: "Inspect the submitter's intent journals, and abandon one that cannot be finished",
		Long: `List the intents in --spool-dir that no run has finished: each is a batch file on its way to a batch,
in state spooling (a stream's open file), pending (not uploaded), or uploaded (the batch may exist).
Every submit run tries to finish them first; one that fails is set aside with a warning, its error
recorded (LAST ERROR), and tried again by the next run.`,
		Example: `  batchctl intents
  batchctl intents --all -o json
  batchctl intents abandon 5f0c2a9e1b7d44c3a8e6f0d1`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runIntents(cmd.Context(), opts)
		},
	}
	f := cmd.PersistentFlags()
	f.StringVar(&opts.spoolDir, "spool-dir", envOr(g.getenv, "BATCHCTL_SPOOL_DIR", defaultSpoolDir()), "directory of spool files and intent journals (env BATCHCTL_SPOOL_DIR)")
	cmd.Flags().StringVarP(&opts.output, "output", "o", "table", "table, or json (one object per intent)")
	cmd.Flags().BoolVar(&opts.all, "all", false, "also list the intents whose batch exists")

	abandon := &cobra.Command{
		Use:   "abandon INTENT|JOURNAL...",
		Short: "Give up unfinished intents: no run will finish them, and their spool files are removed",
		Long: `Give up unfinished intents, named by intent ID or journal path (see batchctl intents). The journal
is kept, renamed *.abandoned.json, and no run reads it again; the spool file is removed. Running the
same input again then submits that content anew. An uploaded intent's batch may already exist (a
create whose answer was lost): abandoning it accepts the risk of a second batch.`,
		Example: `  batchctl intents abandon 5f0c2a9e1b7d44c3a8e6f0d1`,
		Args:    usageArgs(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.refs = args
			return runAbandon(opts)
		},
	}
	cmd.AddCommand(abandon)
	return cmd
}

func runIntents(_ context.Context, opts *intentsOptions) error {
	if err := checkOutput(opts.output); err != nil {
		return err
	}
	infos, err := submit.ListIntents(opts.spoolDir, opts.all)
	if err != nil {
		return err
	}
	if opts.output == "json" {
		enc := json.NewEncoder(opts.streams.Out)
		for _, in := range infos {
			if err := enc.Encode(in); err != nil {
				return err
			}
		}
		return nil
	}
	w := tabwriter.NewWriter(opts.streams.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "INTENT\tSTATE\tSOURCE\tPART\tREQUESTS\tSPOOLED\tFILE\tBATCH\tLAST ERROR")
	for _, in := range infos {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\n", in.Intent, in.State, in.Source, in.Part, in.Requests,
			in.SpooledAt.Local().Format(time.DateTime), dash(in.FileID), dash(in.BatchID), dash(in.LastError))
	}
	return w.Flush()
}

func runAbandon(opts *intentsOptions) error {
	for _, ref := range opts.refs {
		to, err := submit.AbandonIntent(opts.spoolDir, ref)
		if errors.Is(err, submit.ErrIntentNotFound) {
			return usageError{err}
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(opts.streams.ErrOut, "abandoned %s (journal kept as %s)\n", ref, to)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

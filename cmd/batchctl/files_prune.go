package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/files"
)

// pruneDeleter names a prune run from the command line in deleted_files.deleted_by.
const pruneDeleter = "files prune"

type filesPruneOptions struct {
	global      *globalOptions
	streams     *IOStreams
	api         *apiOptions
	output      string
	dryRun      bool
	olderThan   time.Duration
	maxAttempts int
}

func newFilesPruneCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &filesPruneOptions{global: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete the API files of tracked batches that no batch needs any more",
		Long: `Delete (DELETE /v1/files/{id}) the files 'batchctl files' shows as prunable: the output and error files
of batches whose results are loaded, and the input files of loaded batches that nothing will read again. A file
is never deleted while a batch needs it: while its batch is in flight or not loaded; for an input file, while the
batch may still be resubmitted (a resubmission is built from its lines), and, for a lineage's root, until every
resubmission of the lineage is loaded (their loads take input_line from it). Files no tracked batch names are not
batchctl's and are never deleted.

The results table is then the only copy of the answers: nothing can be loaded from the API again. Keep the files
a while with --older-than if you may want to.

Each deletion is recorded (deleted_files) once the API has confirmed it, so a re-run sends no DELETE twice; a
file the API no longer has (404) counts as deleted. A prune stopped or killed half way has lost nothing, and a
re-run finishes it. Prints one line per file: file, role, batch, result (deleted, gone, would delete, failed).`,
		Example: `  batchctl files prune --dry-run
  batchctl files prune --older-than 168h
  batchctl files prune --max-attempts 3 -o json   # the attempts poll --resubmit gives a request`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runFilesPrune(cmd.Context(), opts)
		},
	}
	opts.api = addAPIFlags(cmd, g)
	f := cmd.Flags()
	f.StringVarP(&opts.output, "output", "o", "table", "table, or json (one object per file)")
	f.BoolVar(&opts.dryRun, "dry-run", false, "print what would be deleted; delete nothing")
	f.DurationVar(&opts.olderThan, "older-than", 0, "only files at least this old, e.g. 168h (input files by their batch's creation, output and error files by its end)")
	addMaxAttemptsFlag(cmd, &opts.maxAttempts)
	return cmd
}

// addMaxAttemptsFlag registers the --max-attempts of files and files prune.
func addMaxAttemptsFlag(cmd *cobra.Command, v *int) {
	cmd.Flags().IntVar(v, "max-attempts", 0, "the attempts a request gets (as poll --resubmit --max-attempts): the input of a batch at that attempt is no longer kept for a resubmission (0: keep the input of every batch that could still be resubmitted)")
}

func runFilesPrune(ctx context.Context, opts *filesPruneOptions) error {
	if err := checkOutput(opts.output); err != nil {
		return err
	}
	if opts.olderThan < 0 || opts.maxAttempts < 0 {
		return usageError{fmt.Errorf("--older-than and --max-attempts want a value ≥ 0")}
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
	report, flush := pruneReporter(opts.streams.Out, opts.output)
	var st files.Stats
	for _, prov := range fileProviders(providers) {
		p := &files.Pruner{Store: s, API: files.OpenAI{Client: prov.C.API}, Logger: opts.global.Logger(), By: pruneDeleter}
		var one files.Stats
		one, err = p.Prune(ctx, files.PruneOptions{MaxAttempts: opts.maxAttempts, OlderThan: opts.olderThan,
			DryRun: opts.dryRun, Provider: prov.Name()}, report)
		st.Deleted, st.Gone, st.WouldDelete, st.Failed = st.Deleted+one.Deleted, st.Gone+one.Gone, st.WouldDelete+one.WouldDelete, st.Failed+one.Failed
		if err != nil {
			break
		}
	}
	if ferr := flush(); err == nil {
		err = ferr
	}
	if opts.dryRun {
		fmt.Fprintf(opts.streams.ErrOut, "would delete %d files\n", st.WouldDelete)
	} else {
		fmt.Fprintf(opts.streams.ErrOut, "deleted %d files (%d of them already gone); %d failed\n", st.Deleted+st.Gone, st.Gone, st.Failed)
	}
	return err
}

// pruneLine is one file in files prune --output json.
type pruneLine struct {
	FileID  string `json:"file_id"`
	Role    string `json:"role"`
	BatchID string `json:"batch_id"`
	Result  string `json:"result"`
	Error   string `json:"error,omitempty"`
}

// pruneReporter prints each outcome as it comes, so a long prune shows progress and holds no list in memory. Table
// columns have fixed widths for the same reason.
func pruneReporter(w io.Writer, output string) (report func(files.Outcome), flush func() error) {
	var werr error
	enc := json.NewEncoder(w)
	if output == "table" {
		_, werr = fmt.Fprintf(w, "%-30s  %-6s  %-32s  %s\n", "FILE", "ROLE", "BATCH", "RESULT")
	}
	report = func(o files.Outcome) {
		if werr != nil {
			return
		}
		line := pruneLine{FileID: o.FileID, Role: o.Role, BatchID: o.BatchID, Result: o.Result}
		if o.Err != nil {
			line.Error = batchapi.Message(o.Err)
		}
		if output == "json" {
			werr = enc.Encode(line)
			return
		}
		_, werr = fmt.Fprintf(w, "%-30s  %-6s  %-32s  %s\n", line.FileID, line.Role, line.BatchID, line.Result)
	}
	return report, func() error { return werr }
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/files"
	"github.com/batchctl/batchctl/provider"
	oaiprov "github.com/batchctl/batchctl/provider/openai"
	"github.com/batchctl/batchctl/store"
)

func init() { subcommands = append(subcommands, newFilesCmd) }

type filesOptions struct {
	global      *globalOptions
	streams     *IOStreams
	api         *apiOptions
	ids         []string
	output      string
	limit       int
	maxAttempts int
	now         func() time.Time
}

func newFilesCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &filesOptions{global: g, streams: streams, now: time.Now}
	cmd := &cobra.Command{
		Use:   "files [BATCH_ID...]",
		Short: "List the API files of tracked batches, and which ones a prune would delete",
		Long: `List the files of tracked batches (the named ones, or the most recent, --limit): each batch's input file,
which batchctl uploaded, and its output and error files, with what the API says of each (size, age, expiry), the
batch it belongs to, whether the batch's results are loaded, and its state:

  needed    a batch still needs it: the batch is in flight or its results are not loaded, or (an input file) the
            batch may still be resubmitted, or a resubmission of its lineage is not loaded yet (its load takes
            input_line from the root's input file)
  prunable  'batchctl files prune' would delete it
  deleted   batchctl deleted it (prune, or poll --delete-files)
  gone      the API no longer has it: it expired (batch files live 30 days by default), or was deleted elsewhere

Files no tracked batch names are not batchctl's: they are never listed, and never deleted. A few files are looked
up one by one (GET /v1/files/{id}); more, in the API's file list (GET /v1/files, 10 000 a page).`,
		Example: `  batchctl files
  batchctl files batch_abc123 -o json
  batchctl files prune --dry-run`,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.ids = args
			return runFiles(cmd.Context(), opts)
		},
	}
	opts.api = addAPIFlags(cmd, g)
	f := cmd.Flags()
	f.StringVarP(&opts.output, "output", "o", "table", "table, or json (one object per file)")
	f.IntVar(&opts.limit, "limit", 50, "without BATCH_IDs, list the files of this many most recent batches (0: all)")
	addMaxAttemptsFlag(cmd, &opts.maxAttempts)
	cmd.AddCommand(newFilesPruneCmd(g, streams))
	return cmd
}

func runFiles(ctx context.Context, opts *filesOptions) error {
	if err := checkOutput(opts.output); err != nil {
		return err
	}
	if opts.limit < 0 || opts.maxAttempts < 0 {
		return usageError{fmt.Errorf("--limit and --max-attempts want a number ≥ 0")}
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
	var listed []files.File
	for _, p := range fileProviders(providers) {
		l := &files.Lister{Store: s, API: files.OpenAI{Client: p.C.API}}
		some, err := l.List(ctx, store.FileQuery{BatchIDs: opts.ids, Limit: opts.limit, MaxAttempts: opts.maxAttempts, Provider: p.Name()})
		if err != nil {
			return fmt.Errorf("%s: %w", p.Name(), err)
		}
		listed = append(listed, some...)
	}
	if opts.output == "json" {
		return writeFilesJSON(opts.streams.Out, listed)
	}
	return writeFilesTable(opts.streams.Out, listed, opts.now())
}

// fileProviders are the providers of the set whose batches have files at the API (OpenAI's and Azure's protocol),
// in a fixed order; Anthropic's batches take their requests inline and leave no file to list or delete.
func fileProviders(set provider.Set) []*oaiprov.Provider {
	var ps []*oaiprov.Provider
	for _, name := range provider.Names {
		if p, ok := set[name].(*oaiprov.Provider); ok {
			ps = append(ps, p)
		}
	}
	return ps
}

// fileJSON is one file in --output json.
type fileJSON struct {
	FileID        string     `json:"file_id"`
	Role          string     `json:"role"`
	BatchID       string     `json:"batch_id"`
	RootBatchID   string     `json:"root_batch_id"`
	BatchStatus   string     `json:"batch_status"`
	ResultsLoaded bool       `json:"results_loaded"`
	State         string     `json:"state"`
	Bytes         *int64     `json:"bytes"`
	CreatedAt     *time.Time `json:"created_at"`
	ExpiresAt     *time.Time `json:"expires_at"`
	DeletedAt     *time.Time `json:"deleted_at"`
	DeletedBy     string     `json:"deleted_by,omitempty"`
}

func writeFilesJSON(w io.Writer, listed []files.File) error {
	enc := json.NewEncoder(w)
	for _, f := range listed {
		j := fileJSON{FileID: f.FileID, Role: f.Role, BatchID: f.BatchID, RootBatchID: f.RootBatchID,
			BatchStatus: f.BatchStatus, ResultsLoaded: f.ResultsLoadedAt != nil, State: f.State}
		if o := f.Object; o != nil {
			j.Bytes, j.CreatedAt, j.ExpiresAt = &o.Bytes, &o.CreatedAt, o.ExpiresAt
		}
		if d := f.Deleted; d != nil {
			j.DeletedAt, j.DeletedBy = &d.DeletedAt, d.DeletedBy
		}
		if err := enc.Encode(j); err != nil {
			return err
		}
	}
	return nil
}

func writeFilesTable(w io.Writer, listed []files.File, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tROLE\tBATCH\tSTATUS\tLOADED\tSIZE\tAGE\tEXPIRES\tSTATE")
	var held, prunable int64
	var nPrunable int
	for _, f := range listed {
		size, made, expires := "-", "-", "-"
		if o := f.Object; o != nil {
			size, made = byteSize(o.Bytes), age(now.Sub(o.CreatedAt))
			if o.ExpiresAt != nil {
				expires = "in " + age(o.ExpiresAt.Sub(now))
			}
			held += o.Bytes
			if f.State == files.StatePrunable {
				prunable += o.Bytes
				nPrunable++
			}
		}
		loaded := "no"
		if f.ResultsLoadedAt != nil {
			loaded = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.FileID, f.Role, f.BatchID, f.BatchStatus, loaded,
			size, made, expires, f.State)
	}
	fmt.Fprintf(tw, "TOTAL (%d files)\t\t\t\t\t%s\t\t\t%d prunable (%s)\n", len(listed), byteSize(held), nPrunable, byteSize(prunable))
	return tw.Flush()
}

// byteSize prints a size the way people read sizes: 812 B, 4.2 kB, 181.0 MB (powers of 1000, as the API's limits).
func byteSize(n int64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1000, "kB"
	for _, u := range []string{"MB", "GB", "TB"} {
		if v < 1000 {
			break
		}
		v, unit = v/1000, u
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

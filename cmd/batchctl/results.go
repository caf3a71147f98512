package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/store"
)

func init() { subcommands = append(subcommands, newResultsCmd) }

type resultsOptions struct {
	global  *globalOptions
	streams *IOStreams
	ids     []string
	all     bool
	since   string
	format  string
	order   string
	outDir  string
	splitBy string
}

func newResultsCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &resultsOptions{global: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "results [BATCH_ID...]",
		Short: "Export result rows: the final outcome of each request, in input or completion order",
		Long: `Stream result rows from the database to stdout, or to one file per batch or per source with --out.

Each row is the final outcome of one request across resubmissions (the final_results view): naming any batch of
a lineage exports the whole lineage. Fields: root_batch_id, batch_id (the attempt that answered), custom_id,
input_line, status_code, response (the response body), error ({code, message}), attempt, source, loaded_at.

--order input gives each submit run whole, runs in the order they started, each run's batches by part and their
requests at their lines in the original input; two runs that share a source name (two stdin streams) never
interleave. The API itself returns answers in any order. --order completion gives them as they were loaded.
Memory stays flat whatever the size: rows stream from Postgres to the output.`,
		Example: `  batchctl results batch_abc123
  batchctl results --all --format csv > results.csv
  batchctl results --all --since 2026-11-21T00:00:00Z --order completion
  batchctl results --all --out exports/ --split-by source`,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.ids = args
			return runResults(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.all, "all", false, "export every batch")
	f.StringVar(&opts.since, "since", "", "only rows loaded at or after this time (RFC 3339, or a duration ago such as 24h)")
	f.StringVar(&opts.format, "format", "jsonl", "jsonl or csv")
	f.StringVar(&opts.order, "order", "input", "input (original input order) or completion (as loaded)")
	f.StringVar(&opts.outDir, "out", "", "write files into this directory instead of stdout (with --split-by)")
	f.StringVar(&opts.splitBy, "split-by", "batch", "with --out: one file per batch (its original batch) or per source")
	return cmd
}

func runResults(ctx context.Context, opts *resultsOptions) error {
	q := store.ExportQuery{BatchIDs: opts.ids}
	switch {
	case len(opts.ids) == 0 && !opts.all:
		return usageError{errors.New("name batches, or pass --all")}
	case len(opts.ids) > 0 && opts.all:
		return usageError{errors.New("--all exports every batch: name no batch with it")}
	}
	switch opts.order {
	case "input":
		q.Order = store.InputOrder
	case "completion":
		q.Order = store.CompletionOrder
	default:
		return usageError{fmt.Errorf("--order %q: want input or completion", opts.order)}
	}
	if opts.format != "jsonl" && opts.format != "csv" {
		return usageError{fmt.Errorf("--format %q: want jsonl or csv", opts.format)}
	}
	if opts.since != "" {
		t, err := parseSince(opts.since, time.Now())
		if err != nil {
			return usageError{err}
		}
		q.Since = t
	}
	if opts.outDir != "" {
		switch opts.splitBy {
		case "batch":
			q.SplitBy = store.SplitByBatch
		case "source":
			q.SplitBy = store.SplitBySource
		default:
			return usageError{fmt.Errorf("--split-by %q: want batch or source", opts.splitBy)}
		}
		if err := os.MkdirAll(opts.outDir, 0o755); err != nil {
			return fmt.Errorf("create --out directory: %w", err)
		}
	}

	s, err := opts.global.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()

	if opts.outDir == "" {
		w := newRowWriter(opts.streams.Out, opts.format)
		if err := s.ExportResults(ctx, q, w.write); err != nil {
			return err
		}
		return w.flush()
	}
	// Rows come grouped by the split key, so one file is open at a time.
	sp := &splitWriter{dir: opts.outDir, format: opts.format, by: q.SplitBy, log: opts.global.Logger()}
	err = s.ExportResults(ctx, q, sp.write)
	return errors.Join(err, sp.close())
}

// parseSince reads an RFC 3339 time or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time (2026-11-21T00:00:00Z) or a duration (24h)", s)
}

// rowWriter encodes export rows as JSON lines or CSV.
type rowWriter struct {
	buf    *bufio.Writer
	csv    *csv.Writer
	header bool
}

var csvHeader = []string{"root_batch_id", "batch_id", "custom_id", "input_line", "status_code", "response", "error", "attempt", "source", "loaded_at"}

func newRowWriter(w io.Writer, format string) *rowWriter {
	rw := &rowWriter{buf: bufio.NewWriterSize(w, 256<<10)}
	if format == "csv" {
		rw.csv = csv.NewWriter(rw.buf)
	}
	return rw
}

func (w *rowWriter) write(r *store.ExportRow) error {
	if w.csv == nil {
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode result %s: %w", r.CustomID, err)
		}
		w.buf.Write(b)
		return w.buf.WriteByte('\n')
	}
	if !w.header {
		w.header = true
		if err := w.csv.Write(csvHeader); err != nil {
			return err
		}
	}
	return w.csv.Write([]string{r.RootBatchID, r.BatchID, r.CustomID, intCell(r.InputLine), intCell(r.StatusCode),
		string(r.Response), string(r.Error), strconv.Itoa(r.Attempt), r.Source, r.LoadedAt.UTC().Format(time.RFC3339Nano)})
}

func (w *rowWriter) flush() error {
	if w.csv != nil {
		w.csv.Flush()
		if err := w.csv.Error(); err != nil {
			return err
		}
	}
	return w.buf.Flush()
}

func intCell(v *int) string {
	if v == nil {
		return ""
	}
	return strconv.Itoa(*v)
}

// splitWriter writes each group of rows (a batch's or a source's) to its own file.
type splitWriter struct {
	dir, format string
	by          store.SplitBy
	log         interface{ Info(string, ...any) }

	key   string
	file  *os.File
	w     *rowWriter
	names map[string]string // file name → the key that has it
}

func (s *splitWriter) write(r *store.ExportRow) error {
	key := r.RootBatchID
	if s.by == store.SplitBySource {
		key = r.Source
	}
	if s.file == nil || key != s.key {
		if err := s.close(); err != nil {
			return err
		}
		name := fileName(key, s.by)
		if s.names == nil {
			s.names = map[string]string{}
		}
		for i := 2; s.names[name] != "" && s.names[name] != key; i++ {
			name = fileName(key, s.by) + "-" + strconv.Itoa(i) // two sources with one base name
		}
		s.names[name] = key
		path := filepath.Join(s.dir, name+"."+s.format)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return fmt.Errorf("create export file: %w", err)
		}
		s.key, s.file, s.w = key, f, newRowWriter(f, s.format)
		s.log.Info("writing results", "file", path)
	}
	return s.w.write(r)
}

func (s *splitWriter) close() error {
	if s.file == nil {
		return nil
	}
	err := errors.Join(s.w.flush(), s.file.Close())
	s.file, s.w = nil, nil
	return err
}

// fileName makes a group key safe as a file name: a batch ID as is; a source by its base name and characters that
// are safe in any file system.
func fileName(key string, by store.SplitBy) string {
	if key == "" {
		return "unknown-source"
	}
	if by == store.SplitBySource {
		key = filepath.Base(key)
	}
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, key)
}

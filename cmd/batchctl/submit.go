package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/cost"
	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/provider"
	"github.com/batchctl/batchctl/store"
	"github.com/batchctl/batchctl/submit"
)

func init() { subcommands = append(subcommands, newSubmitCmd) }

// progressInterval is how often the progress line on a terminal is redrawn.
const progressInterval = 250 * time.Millisecond

type submitOptions struct {
	global  *globalOptions
	streams *IOStreams
	api     *apiOptions
	prices  *pricesOptions
	maxCost string

	files        []string
	templateFile string
	answerSchema string
	rejectsFile  string
	metadata     []string
	progress     string
	sub          submit.Options
}

func newSubmitCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &submitOptions{global: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "submit [FILE...]",
		Short: "Stream records into batch files, upload them, create batches, print their IDs",
		Long: `Read JSON Lines (or text with --format text) from the files, or stdin when there is none or "-", turn each
record into a Batch API request, cut the requests into batch files within the API's limits, upload each
file streamed from a spool directory, create its batch, and print one JSON line per batch on stdout:
batch_id, input_file_id, requests, bytes, spool_sha256, source, endpoint, model, part.

A record that is already a request line (custom_id, body, optional method and url) passes through. Any
other JSON object becomes one: rendered by --template, or the built-in form of --endpoint from --model,
--system and the --text-field (and, for /v1/images/edits, the pictures in --image-field). custom_id comes
from --id-field or is "<file>:<line>".

Every record is checked before its batch is uploaded; a file is checked whole before anything from it
is uploaded (stdin cannot be: batches filled before a bad line stay submitted). Errors name the file and
line; the exit code is 3. --skip-invalid writes bad records with the reason to --rejects instead.

Never twice: an intent journal beside each spool file records pending, uploaded (file ID) and created
(batch ID). A later run finishes unfinished intents, reconciling with the batch list before a create
that may have happened; running the same command on the same input again creates no batch (it prints
the existing batches, marked "existing") unless --force.`,
		Example: `  # a file of records {"id": ..., "text": ...}
  batchctl submit --model gpt-4o-mini --system "Classify the sentiment." --id-field id reviews.jsonl

  # an endless stream: a batch at least every 10 minutes
  tail -f events.jsonl | batchctl submit --model gpt-4o-mini --flush-interval 10m

  # a template for the body, and embeddings
  batchctl submit --endpoint /v1/embeddings --template body.tmpl docs.jsonl

  # edit pictures: records {"text": "add a hat", "image": "https://…/fox.png" or "file-…"}
  batchctl submit --endpoint /v1/images/edits --model gpt-image-1 edits.jsonl

  # prompt packing: 10 reviews per request, each answered with one of three labels, one result row each
  echo '{"type":"string","enum":["positive","negative","neutral"]}' > label.json
  batchctl submit --model gpt-4o-mini --system "Classify the sentiment." --id-field id \
    --pack 10 --answer-schema label.json reviews.jsonl

  # one request per line of text; check and spool only
  batchctl submit --format text --model gpt-4o-mini --dry-run questions.txt

  # finish what an interrupted run left, reading no input
  batchctl submit --resume`,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.files = args
			return runSubmit(cmd.Context(), opts)
		},
	}
	opts.api = addAPIFlags(cmd, g)
	opts.prices = addPricesFlag(cmd, g)
	cmd.Flags().StringVar(&opts.maxCost, "max-cost", "", "refuse a run whose estimated cost in USD passes this (a file: before anything is uploaded; a stream: at the batch that would pass it)")
	s := &opts.sub
	f := cmd.Flags()
	f.StringVar(&s.Format, "format", submit.FormatJSONL, "input format: jsonl (one JSON object a line) or text (one user message a line)")
	f.StringVar(&s.ProviderName, "provider", envOr(g.getenv, "BATCHCTL_PROVIDER", provider.OpenAI), "batch API: openai, azure (AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY) or anthropic (ANTHROPIC_API_KEY) (env BATCHCTL_PROVIDER)")
	f.StringVar(&s.Endpoint, "endpoint", "", "API endpoint of the requests: "+strings.Join(jsonl.Endpoints, ", ")+" (default /v1/chat/completions; Anthropic: "+provider.EndpointMessages+")")
	f.Int64Var(&s.MaxOutputTokens, "max-output-tokens", 0, "cap each built-in request's answer at this many tokens (required by Anthropic; 0: no cap)")
	f.StringVar(&s.Model, "model", "", "model of the built-in request form")
	f.StringVar(&s.System, "system", "", "system prompt of the built-in form: chat completions and Anthropic's messages (system), responses (instructions); the other endpoints have none and refuse it")
	f.StringVar(&s.TextField, "text-field", "text", "field of a record holding the text of the built-in form")
	f.StringVar(&s.ImageField, "image-field", "image", "field of a record holding the pictures a built-in /v1/images/edits request edits: a URL, a data:image/ URL or a file ID, or an array of them")
	f.StringVar(&s.IDField, "id-field", "", `field of a record holding its custom_id (string or integer); default "<file>:<line>"`)
	f.StringVar(&opts.templateFile, "template", "", `Go text/template file rendering the request body from a record; {{json .field}} writes a value as JSON`)
	f.IntVar(&s.Pack, "pack", 0, "prompt packing: up to N records per request (chat completions and responses), answered as JSON {answers: [{index, answer}]} and unpacked into one result row per record; needs DATABASE_URL (0: one record a request)")
	f.StringVar(&opts.answerSchema, "answer-schema", "", "with --pack: JSON schema file of one record's answer (default: a string)")
	f.IntVar(&s.MaxRequests, "max-requests", 0, "requests per batch (default and most: the provider's limit, 50000 OpenAI, 100000 Azure and Anthropic)")
	f.Int64Var(&s.MaxBytes, "max-bytes", 0, "bytes per batch file, newlines included (default and most: 200000000; Anthropic 256000000)")
	f.Int64Var(&s.MaxTokens, "max-tokens", 0, "estimated prompt tokens per batch, to stay under the model's enqueued-token limit (0: no limit)")
	f.DurationVar(&s.FlushInterval, "flush-interval", 0, "submit a partial batch of a stream that has waited this long (0: only when full or at the end)")
	f.DurationVar(&s.ReconcileSettle, "reconcile-settle", envDuration(g.getenv, "BATCHCTL_RECONCILE_SETTLE", batchapi.DefaultReconcileSettle),
		"after a create whose answer was lost, how long the batch list may take to show the batch: a search that finds nothing is trusted only then (env BATCHCTL_RECONCILE_SETTLE)")
	f.DurationVar(&s.FileExpiresAfter, "file-expires-after", 0, "expires_after of the uploaded batch files, 1h to 720h (0: the API's default, 30 days)")
	f.DurationVar(&s.OutputExpiresAfter, "output-expires-after", 0, "output_expires_after of the batches: their output and error files expire this long after they are written, 1h to 720h (0: the API's default, 30 days)")
	f.DurationVar(&s.ShutdownTimeout, "shutdown-timeout", submit.DefaultShutdownTimeout, "after SIGTERM or SIGINT, how long a stream's run goes on creating the batches of what it read before it leaves them for --resume")
	f.StringVar(&s.SpoolDir, "spool-dir", envOr(g.getenv, "BATCHCTL_SPOOL_DIR", defaultSpoolDir()), "directory of spool files and intent journals (env BATCHCTL_SPOOL_DIR)")
	f.StringArrayVar(&opts.metadata, "metadata", nil, "k=v metadata for every batch (repeatable; at most 11 pairs)")
	f.BoolVar(&s.DryRun, "dry-run", false, "check and spool, upload nothing, print what would be submitted")
	f.BoolVar(&s.Resume, "resume", false, "only finish the unfinished intents in --spool-dir; read no input")
	f.BoolVar(&s.Force, "force", false, "create batches even for input an earlier run already submitted")
	f.BoolVar(&s.SkipInvalid, "skip-invalid", false, "write bad records to --rejects and go on")
	f.StringVar(&opts.rejectsFile, "rejects", "", "file for records skipped by --skip-invalid, one JSON line each with the reason")
	f.StringVar(&opts.progress, "progress", "auto", "progress line on stderr: auto (when a terminal), always, never")
	return cmd
}

// envDuration reads a duration from the environment, or def when it is unset or not a duration (the flag's own
// parsing then reports nothing: an unparsable env value falls back rather than failing every command).
func envDuration(getenv func(string) string, key string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(getenv(key)); err == nil {
		return d
	}
	return def
}

func defaultSpoolDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "batchctl", "spool")
}

func runSubmit(ctx context.Context, opts *submitOptions) error {
	s := opts.sub
	s.Out, s.Logger = opts.streams.Out, opts.global.Logger()
	if opts.progress != "auto" && opts.progress != "always" && opts.progress != "never" {
		return usageError{fmt.Errorf("--progress %q: want auto, always or never", opts.progress)}
	}
	if !s.Resume {
		for _, name := range orStdin(opts.files) {
			if name == "-" {
				s.Inputs = append(s.Inputs, submit.Input{Name: "stdin", Reader: opts.streams.In})
				continue
			}
			if err := checkInputPath(name); err != nil {
				return inputError{err}
			}
			s.Inputs = append(s.Inputs, submit.Input{Name: filepath.Clean(name), Path: name})
		}
	}
	if len(opts.metadata) > 0 {
		s.Metadata = map[string]string{}
		for _, kv := range opts.metadata {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return usageError{fmt.Errorf("--metadata %q: want key=value", kv)}
			}
			s.Metadata[k] = v
		}
	}
	if opts.templateFile != "" {
		b, err := os.ReadFile(opts.templateFile)
		if err != nil {
			return usageError{fmt.Errorf("--template: %w", err)}
		}
		s.Template, s.TemplateName = string(b), filepath.Base(opts.templateFile)
	}
	if opts.answerSchema != "" {
		b, err := os.ReadFile(opts.answerSchema)
		if err != nil {
			return usageError{fmt.Errorf("--answer-schema: %w", err)}
		}
		s.AnswerSchema = b
	}
	prices, err := opts.prices.table()
	if err != nil {
		return err
	}
	s.Prices = prices
	if opts.maxCost != "" {
		if s.MaxCost, err = cost.ParseUSD(opts.maxCost); err != nil || s.MaxCost <= 0 {
			return usageError{fmt.Errorf("--max-cost %q: want a positive amount in USD, such as 25 or 0.50", opts.maxCost)}
		}
	}
	if opts.rejectsFile != "" && !s.SkipInvalid {
		return usageError{errors.New("--rejects takes the records --skip-invalid skips: add --skip-invalid, or drop --rejects")}
	}
	if opts.rejectsFile != "" {
		f, err := os.OpenFile(opts.rejectsFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("open --rejects: %w", err)
		}
		defer f.Close()
		s.Rejects = f
	}
	if !s.DryRun {
		if err := opts.connect(&s); err != nil {
			return err
		}
	}
	if opts.global.DatabaseURL != "" && !s.DryRun {
		// Connect before anything is uploaded, so a wrong URL costs nothing. A batch created but not recorded (the
		// database failed in between) is recorded by the next run, which re-emits it from its journal.
		st, err := opts.global.openStore(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		if err := st.CheckMigrated(ctx); err != nil {
			return err
		}
		s.OnCreated = func(ctx context.Context, c submit.Created) error {
			_, err := st.TrackBatch(ctx, batchFromCreated(c))
			return err
		}
		s.SaveRequestIDs = func(ctx context.Context, sha string, ids iter.Seq2[store.RequestID, error]) error {
			return st.SaveRequestIDs(ctx, sha, ids)
		}
		s.SavePack = st.SavePack
		s.OwnedBatch = func(ctx context.Context, id string) (bool, error) {
			_, err := st.GetBatch(ctx, id)
			if errors.Is(err, store.ErrNotFound) {
				return false, nil
			}
			return err == nil, err
		}
		if s.ProviderName != provider.Anthropic { // Anthropic's batches are created from the spool, by submit only
			if err := quotaAdmission(ctx, &s, st, opts.global.Logger()); err != nil {
				return err
			}
		}
	}
	s.Progress = new(submit.Progress)
	stop := startProgress(opts.streams.ErrOut, opts.progress, s.Progress)
	err = submit.Run(ctx, s)
	stop()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, submit.ErrInvalidOptions):
		return usageError{err}
	default:
		if _, ok := jsonl.AsRecordError(err); ok || errors.Is(err, submit.ErrOverBudget) || errors.Is(err, submit.ErrOverQuota) {
			return inputError{err}
		}
		return err
	}
}

// connect gives a submit its provider: the OpenAI or Azure client (submit wraps it with its retry settings), or the
// Anthropic provider, and the account its journals record.
func (opts *submitOptions) connect(s *submit.Options) error {
	switch s.ProviderName {
	case provider.OpenAI, "":
		client, err := opts.api.client()
		if err != nil {
			return err
		}
		s.Client = &client
		s.APIBase, s.Account = batchapi.Endpoint(opts.api.baseURL), batchapi.Account(opts.api.baseURL, opts.api.apiKey)
	case provider.Azure:
		client, acct, err := opts.api.azure()
		if err != nil {
			return err
		}
		s.Client, s.APIBase, s.Account = &client, acct.base, acct.fingerprint
	case provider.Anthropic:
		p, acct, err := opts.api.anthropic(opts.global.Logger())
		if err != nil {
			return err
		}
		p.Retry = batchapi.Retry{Initial: s.RetryInitial, MaxElapsed: s.RetryMaxElapsed, Logger: opts.global.Logger()}
		p.ReconcileSettle = s.ReconcileSettle
		// Creates at Anthropic are serialised per spool directory: see anthropic.Provider.Find.
		if err := os.MkdirAll(s.SpoolDir, 0o700); err != nil {
			return fmt.Errorf("create spool dir: %w", err)
		}
		p.LockPath = filepath.Join(s.SpoolDir, ".anthropic-create.lock")
		s.Provider, s.APIBase, s.Account = p, acct.base, acct.fingerprint
	default:
		return usageError{provider.Check(s.ProviderName)}
	}
	return nil
}

// checkInputPath refuses, before anything is read or spooled, an input that is not a readable file or stream: a
// missing path, a directory, a file this user may not read. FIFOs and devices pass: they are streams.
func checkInputPath(name string) error {
	fi, err := os.Stat(name)
	if err != nil {
		return fmt.Errorf("%s: cannot read input: %w", name, errors.Unwrap(err))
	}
	if fi.IsDir() {
		return fmt.Errorf("%s: is a directory, not a file of records", name)
	}
	if !fi.Mode().IsRegular() {
		return nil // opening a FIFO would wait for its writer
	}
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("%s: cannot read input: %w", name, errors.Unwrap(err))
	}
	return f.Close()
}

func orStdin(files []string) []string {
	if len(files) == 0 {
		return []string{"-"}
	}
	return files
}

// startProgress redraws one progress line on w until the returned function is called, when w is a terminal (or
// mode is "always"). JSON lines go to stdout, so the line never mixes with them.
func startProgress(w io.Writer, mode string, p *submit.Progress) (stop func()) {
	show := mode == "always"
	if f, ok := w.(*os.File); ok && mode == "auto" {
		show = term.IsTerminal(int(f.Fd()))
	}
	if !show {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	draw := func() {
		fmt.Fprintf(w, "\r%d records read, %d rejected, %d batches, %.1f MB uploaded ",
			p.Records.Load(), p.Rejected.Load(), p.Batches.Load(), float64(p.BytesUploaded.Load())/1e6)
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				draw()
			case <-done:
				draw()
				fmt.Fprintln(w)
				return
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

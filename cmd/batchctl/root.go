package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/store"
)

// IOStreams are the streams a command reads and writes. Commands never touch os.Stdin/os.Stdout directly, so every
// command runs in tests without a terminal.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer // machine-readable output only (batch IDs, JSON, exports)
	ErrOut io.Writer // logs, progress, human messages
}

// globalOptions are the persistent flags every command sees.
type globalOptions struct {
	DatabaseURL string
	Schema      string
	LogLevel    string
	LogFormat   string

	getenv func(string) string
	logger *slog.Logger
}

// Logger returns the logger configured by --log-level and --log-format.
func (g *globalOptions) Logger() *slog.Logger { return g.logger }

// run builds the command tree, executes it with args and returns the process exit code.
func run(ctx context.Context, args []string, streams *IOStreams, getenv func(string) string) int {
	root := newRootCmd(streams, getenv)
	root.SetArgs(args)
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCodeFor(err)
	fmt.Fprintf(streams.ErrOut, "batchctl: %s\n", errorText(err))
	if code == exitUsage {
		fmt.Fprintln(streams.ErrOut, "Run 'batchctl --help' for usage.")
	}
	return code
}

// errorText is err's text for the terminal. openai-go's error text is only the HTTP status ("OpenAI API error: 404
// Not Found"), so for an API error in the chain it adds what the API said: its message, code, parameter and type.
func errorText(err error) string {
	if said := batchapi.Said(err); said != "" {
		return err.Error() + ": " + said
	}
	return err.Error()
}

func newRootCmd(streams *IOStreams, getenv func(string) string) *cobra.Command {
	g := &globalOptions{getenv: getenv}
	cmd := &cobra.Command{
		Use:   "batchctl <command>",
		Short: "Move large volumes of LLM requests through the OpenAI Batch API",
		Long: `batchctl submits records to the OpenAI Batch API at half the price of the synchronous API,
tracks every batch in Postgres, and lands one result row per request in a table any SQL consumer can read.

  submit    stream records into batch files, upload them, create batches (no database needed)
  poll      the daemon: track batches and load their results into Postgres
  serve     the live batch dashboard, River UI, metrics and OpenAI's signed webhooks (database only)
  emulator  a local OpenAI Files + Batches API for tests and demos`,
		Example: `  export DATABASE_URL=postgres://localhost/app OPENAI_API_KEY=sk-...
  batchctl migrate
  batchctl submit --model gpt-4o-mini reviews.jsonl
  batchctl poll`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(streams.ErrOut, g.LogLevel, g.LogFormat)
			if err != nil {
				return usageError{err}
			}
			g.logger = logger
			return nil
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	f := cmd.PersistentFlags()
	f.StringVar(&g.DatabaseURL, "database-url", getenv("DATABASE_URL"), "Postgres connection URL (env DATABASE_URL)")
	f.StringVar(&g.Schema, "schema", envOr(getenv, "BATCHCTL_SCHEMA", "batchctl"), "Postgres schema holding batchctl's tables and River's (env BATCHCTL_SCHEMA)")
	f.StringVar(&g.LogLevel, "log-level", envOr(getenv, "BATCHCTL_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env BATCHCTL_LOG_LEVEL)")
	f.StringVar(&g.LogFormat, "log-format", envOr(getenv, "BATCHCTL_LOG_FORMAT", "text"), "log format on stderr: text or json (env BATCHCTL_LOG_FORMAT)")

	for _, add := range subcommands {
		cmd.AddCommand(add(g, streams))
	}
	return cmd
}

// subcommands lists the constructors of the command tree; each command file appends its own in init, so adding a
// command touches one file.
var subcommands []func(*globalOptions, *IOStreams) *cobra.Command

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("invalid --log-format %q: want text or json", format)
	}
}

// openStore connects to the configured database.
func (g *globalOptions) openStore(ctx context.Context) (*store.Store, error) {
	if g.DatabaseURL == "" {
		return nil, usageError{errors.New("this command needs a database: set --database-url or DATABASE_URL")}
	}
	return store.Open(ctx, g.DatabaseURL, g.Schema)
}

// usageArgs reports the errors of a cobra argument check as usage errors.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// noArgs is cobra.NoArgs reported as a usage error.
var noArgs = usageArgs(cobra.NoArgs)

// checkOutput refuses an --output other than the table and JSON every listing command prints.
func checkOutput(output string) error {
	if output != "table" && output != "json" {
		return usageError{fmt.Errorf("--output %q: want table or json", output)}
	}
	return nil
}

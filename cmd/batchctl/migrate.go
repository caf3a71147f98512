package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/migrations"
)

func init() { subcommands = append(subcommands, newMigrateCmd) }

type migrateOptions struct {
	global  *globalOptions
	streams *IOStreams
	status  bool
}

func newMigrateCmd(g *globalOptions, streams *IOStreams) *cobra.Command {
	opts := &migrateOptions{global: g, streams: streams}
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade batchctl's tables and River's in the configured schema",
		Long: `Apply River's migrations and batchctl's own, inside --schema (created when missing).

Idempotent: a second run applies nothing. Safe when several processes run it at once (they take turns on a
Postgres advisory lock), so every daemon may run it at start-up.`,
		Example: `  batchctl migrate --database-url postgres://localhost/app
  batchctl migrate --schema batchctl_staging
  batchctl migrate --status`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMigrate(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&opts.status, "status", false, "list every migration and whether it is applied; change nothing")
	return cmd
}

func runMigrate(ctx context.Context, opts *migrateOptions) error {
	s, err := opts.global.openStore(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	log := opts.global.Logger()

	if opts.status {
		list, err := migrations.Status(ctx, s.Pool(), s.Schema())
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(opts.streams.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "COMPONENT\tVERSION\tNAME\tAPPLIED")
		for _, m := range list {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", m.Component, m.Version, m.Name, yesNo(m.Applied))
		}
		return tw.Flush()
	}

	applied, err := migrations.Up(ctx, s.Pool(), s.Schema(), log)
	if err != nil {
		return err
	}
	log.Info("schema up to date", "schema", s.Schema(), "applied", len(applied))
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

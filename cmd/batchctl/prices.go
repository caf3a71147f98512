package main

import (
	"github.com/spf13/cobra"

	"github.com/batchctl/batchctl/cost"
)

// pricesOptions is the --prices flag of the commands that price usage.
type pricesOptions struct {
	path   string
	getenv func(string) string
}

// addPricesFlag adds --prices, with the BATCHCTL_PRICES fallback read at run time.
func addPricesFlag(cmd *cobra.Command, g *globalOptions) *pricesOptions {
	o := &pricesOptions{getenv: g.getenv}
	cmd.Flags().StringVar(&o.path, "prices", "", `JSON price file merged over the built-in Batch API prices (env `+cost.EnvPrices+`):
{"MODEL": {"input": 0.075, "cached_input": 0.0375, "output": 0.30}} in USD per 1M tokens`)
	return o
}

// table loads the price table: the built-in one with the file of --prices (or BATCHCTL_PRICES) over it. A bad
// file is a usage error naming the file.
func (o *pricesOptions) table() (*cost.Table, error) {
	path := o.path
	if path == "" {
		path = o.getenv(cost.EnvPrices)
	}
	t, err := cost.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	return t, nil
}

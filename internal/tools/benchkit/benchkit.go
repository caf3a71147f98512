// Package benchkit holds what make bench's Go tools (quotabench, scalebench, webhookbench) share: an emulator on a
// loopback port and the clean-up of their schemas.
package benchkit

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/batchctl/batchctl/emulator"
)

// Emulator starts an emulator with opts on a free loopback port. It returns it with the base URL of its API (ending
// in /v1) and a function that stops serving and closes it.
func Emulator(opts emulator.Options) (emu *emulator.Server, baseURL string, stop func(), err error) {
	emu, err = emulator.New(opts)
	if err != nil {
		return nil, "", nil, err
	}
	baseURL, stopServing, err := emu.ServeLocal()
	if err != nil {
		_ = emu.Close()
		return nil, "", nil, err
	}
	return emu, baseURL, func() {
		stopServing()
		_ = emu.Close()
	}, nil
}

// DropSchema drops schema and everything in it, best effort: a bench's clean-up on its way out.
func DropSchema(url, schema string) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	_, _ = conn.Exec(ctx, `drop schema if exists `+pgx.Identifier{schema}.Sanitize()+` cascade`)
}

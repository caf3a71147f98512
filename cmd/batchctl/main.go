// Command batchctl moves large volumes of LLM requests through the OpenAI Batch API.
//
// It submits records as batch files (batchctl submit), tracks batches and loads their results into Postgres with a
// River-backed daemon (batchctl poll), and serves a local emulator of the API (batchctl emulator).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal asks for a graceful stop; from then on a second one has its default effect and ends the
	// process at once (the journals make that safe too).
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], &IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}, os.Getenv)
	stop()
	os.Exit(code)
}

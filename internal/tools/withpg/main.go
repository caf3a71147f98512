// Command withpg runs a command with DATABASE_URL pointing at a Postgres server: the one already in DATABASE_URL,
// or a throwaway cluster it starts first and removes afterwards (see package pgtest). make test and make demo use it:
//
//	go run ./internal/tools/withpg -- go test ./...
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/batchctl/batchctl/internal/pgtest"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: withpg -- COMMAND [ARG...]")
		return 2
	}
	env := os.Environ()
	if os.Getenv("DATABASE_URL") == "" {
		c, err := pgtest.Start(context.Background())
		if err != nil {
			fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
			return 1
		}
		defer func() {
			if err := c.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "withpg: stop Postgres: %v\n", err)
			}
		}()
		fmt.Fprintf(os.Stderr, "withpg: throwaway Postgres at %s\n", c.URL())
		env = append(env, "DATABASE_URL="+c.URL())
	}

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Interrupts go to the child (it shares our process group for a terminal ^C); we wait for it, then clean up.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		return 1
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err := cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit) && exit.ExitCode() > 0:
		return exit.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "withpg: %v\n", err)
		return 1
	}
}

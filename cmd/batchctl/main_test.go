package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/batchctl/batchctl/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// result is what one batchctl invocation left behind.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs batchctl in-process with args, stdin and an environment.
func runCLI(t *testing.T, stdin string, env map[string]string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	streams := &IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut}
	code := run(context.Background(), args, streams, func(k string) string { return env[k] })
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

package main

import (
	"errors"
	"strings"

	"github.com/openai/openai-go/v3"
)

// Exit codes. Scripts rely on them: keep their values stable.
const (
	exitOK    = 0
	exitError = 1 // anything not classified below (I/O, database, internal)
	exitUsage = 2 // bad flags or arguments
	exitInput = 3 // invalid input records
	exitAPI   = 4 // the OpenAI API refused or failed a call
)

// usageError marks a bad flag or argument.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// inputError marks invalid input records; commands wrap their packages' input errors in it.
type inputError struct{ err error }

func (e inputError) Error() string { return e.err.Error() }
func (e inputError) Unwrap() error { return e.err }

func exitCodeFor(err error) int {
	var (
		u   usageError
		in  inputError
		api *openai.Error
	)
	switch {
	case errors.As(err, &u), isCobraUsageError(err):
		return exitUsage
	case errors.As(err, &in):
		return exitInput
	case errors.As(err, &api):
		return exitAPI
	default:
		return exitError
	}
}

// isCobraUsageError recognises the one usage error cobra returns untyped: an unknown command (flag errors go
// through the root's FlagErrorFunc, argument checks through usageArgs).
func isCobraUsageError(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ")
}

package jsonl

import (
	"errors"
	"fmt"
)

// RecordError reports one bad input line: where it is and what is wrong with it. Reading can go on after it.
type RecordError struct {
	Source string // a name for the input, usually a file name or "stdin"
	Line   int    // 1-based line number in Source
	Reason string // what is wrong, for a human
}

// Error returns "source:line: reason", the form compilers use, so editors can jump to the line.
func (e *RecordError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.Source, e.Line, e.Reason)
}

// Errorf returns a *RecordError for source and line with a formatted reason.
func Errorf(source string, line int, format string, args ...any) *RecordError {
	return &RecordError{Source: source, Line: line, Reason: fmt.Sprintf(format, args...)}
}

// AsRecordError reports whether err is or wraps a *RecordError and returns it.
func AsRecordError(err error) (*RecordError, bool) {
	var re *RecordError
	ok := errors.As(err, &re)
	return re, ok
}

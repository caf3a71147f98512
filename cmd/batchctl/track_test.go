package main

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

func TestParseTrackLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line    string
		wantID  string
		skip    bool
		wantErr string
	}{
		{"batch_abc", "batch_abc", false, ""},
		{`{"batch_id":"batch_x","input_file_id":"file-1","requests":3,"source":"a.jsonl","spool_sha256":"ab"}`, "batch_x", false, ""},
		{`{"dry_run":true,"requests":3}`, "", true, ""},
		{"file-123", "", false, "not a batch ID"},
		{"batch_a b", "", false, "not a batch ID"},
		{`{"batch_id":7}`, "", false, "not a batchctl submit line"},
		{`{"batch_id":"x"}`, "", false, "not a batch ID"},
	}
	for _, tt := range tests {
		b, skip, err := parseTrackLine(tt.line)
		if tt.wantErr != "" {
			require.ErrorContains(t, err, tt.wantErr, tt.line)
			continue
		}
		require.NoError(t, err, tt.line)
		require.Equal(t, tt.skip, skip)
		require.Equal(t, tt.wantID, b.BatchID)
	}
	b, _, err := parseTrackLine(tests[1].line)
	require.NoError(t, err)
	require.Equal(t, "a.jsonl", b.Source)
	require.Equal(t, 3, b.RequestTotal)
	require.Equal(t, "validating", b.Status)
}

// TestTrackChecksArgumentsAsItChecksStdin: an ID refused on stdin is refused as an argument too, with the same
// message (a usage error there, an input error on stdin), and nothing is tracked.
func TestTrackChecksArgumentsAsItChecksStdin(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t, emulator.Options{})
	bad := []string{"not a batch id", "file-123", "batch_a b", `batch_x"`, "batch_", "batch_é"}
	for _, id := range bad {
		r := runCLI(t, "", e.env, "track", "batch_fine", id)
		require.Equal(t, exitUsage, r.code, "argument %q: %s", id, r.stderr)
		require.Contains(t, errorLine(r.stderr), fmt.Sprintf("%q is not a batch ID", id))
	}
	require.Zero(t, e.count(t, `select count(*) from $schema.batches`), "arguments are all checked before any is tracked")

	for _, id := range bad {
		r := runCLI(t, "batch_fine\n"+id+"\n", e.env, "track")
		require.Equal(t, exitInput, r.code, "stdin %q: %s", id, r.stderr)
		require.Contains(t, errorLine(r.stderr), fmt.Sprintf("stdin:2: %q is not a batch ID", id))
	}
	require.Zero(t, e.count(t, `select count(*) from $schema.batches where batch_id <> 'batch_fine'`))
}

// FuzzParseTrackLine: whatever arrives on track's stdin, the parser returns a batch ID or an error, never panics,
// and never accepts an ID that could not be one.
func FuzzParseTrackLine(f *testing.F) {
	for _, seed := range []string{"batch_abc", `{"batch_id":"batch_x","requests":1}`, `{"dry_run":true}`, `{`, "batch_\x00", `{"batch_id":null}`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		b, skip, err := parseTrackLine(line)
		if err != nil || skip {
			return
		}
		if !strings.HasPrefix(b.BatchID, "batch_") || strings.ContainsAny(b.BatchID, " \t\"'") {
			t.Fatalf("accepted %q as a batch ID", b.BatchID)
		}
		if utf8.ValidString(line) && !strings.HasPrefix(line, "{") && b.BatchID != line {
			t.Fatalf("bare ID %q came back as %q", line, b.BatchID)
		}
	})
}

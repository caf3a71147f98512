package jsonl_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/jsonl"
)

type readResult struct {
	line int
	text string
	err  string
}

func readAll(t *testing.T, r *jsonl.Reader) []readResult {
	t.Helper()
	var out []readResult
	for {
		b, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			re, ok := jsonl.AsRecordError(err)
			require.True(t, ok, "unexpected error %v", err)
			out = append(out, readResult{line: re.Line, err: err.Error()})
			continue
		}
		out = append(out, readResult{line: r.Line(), text: string(b)})
	}
}

func TestReader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		input string
		max   int
		want  []readResult
	}{
		{"empty", "", 0, nil},
		{"lines", "a\nb\n", 0, []readResult{{1, "a", ""}, {2, "b", ""}}},
		{"no final newline", "a\nb", 0, []readResult{{1, "a", ""}, {2, "b", ""}}},
		{"blank lines are returned", "a\n\nb\n", 0, []readResult{{1, "a", ""}, {2, "", ""}, {3, "b", ""}}},
		{"crlf", "a\r\nb\r\n", 0, []readResult{{1, "a", ""}, {2, "b", ""}}},
		{"bom on line 1 is dropped", "\xEF\xBB\xBFa\n\xEF\xBB\xBFb\n", 0, []readResult{{1, "a", ""}, {2, "\xEF\xBB\xBFb", ""}}},
		{"invalid utf8", "ok\nx\xffy\nok\n", 0, []readResult{{1, "ok", ""}, {2, "", "in:2: invalid UTF-8 at byte 2"}, {3, "ok", ""}}},
		{"line at the cap", "abcd\r\nab\n", 4, []readResult{{1, "abcd", ""}, {2, "ab", ""}}},
		{"line over the cap", "abcde\nab\n", 4, []readResult{{1, "", "in:1: line is 5 bytes, over the limit of 4"}, {2, "ab", ""}}},
		{"huge line over the cap", strings.Repeat("x", 1<<20) + "\nab\n", 1000, []readResult{{1, "", "in:1: line is 1048577 bytes, over the limit of 1000"}, {2, "ab", ""}}},
		{"long line under the cap", strings.Repeat("x", 600<<10) + "\nab", 1 << 20, []readResult{{1, strings.Repeat("x", 600<<10), ""}, {2, "ab", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// HalfReader makes lines cross bufio's buffer boundaries the hard way.
			for _, r := range []io.Reader{strings.NewReader(tt.input), iotest.HalfReader(strings.NewReader(tt.input))} {
				got := readAll(t, jsonl.NewReader(r, "in", tt.max))
				require.Equal(t, tt.want, got)
			}
		})
	}
}

func TestReaderReadError(t *testing.T) {
	t.Parallel()
	r := jsonl.NewReader(iotest.ErrReader(errors.New("disk on fire")), "in", 0)
	_, err := r.Next()
	require.ErrorContains(t, err, "read in: disk on fire")
	_, ok := jsonl.AsRecordError(err)
	require.False(t, ok)
}

func FuzzReader(f *testing.F) {
	f.Add([]byte("a\nb\r\n\xEF\xBB\xBF{}\n"), 8)
	f.Add([]byte("\xff\n\n"), 1)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		max = max%64 + 1
		if max <= 0 {
			max += 64
		}
		r := jsonl.NewReader(iotest.HalfReader(strings.NewReader(string(data))), "fuzz", max)
		lines := 0
		for {
			b, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			lines++
			require.Equal(t, lines, r.Line())
			if err != nil {
				_, ok := jsonl.AsRecordError(err)
				require.True(t, ok)
				continue
			}
			require.LessOrEqual(t, len(b), max)
			require.NotContains(t, string(b), "\n")
		}
		require.LessOrEqual(t, lines, strings.Count(string(data), "\n")+1)
	})
}

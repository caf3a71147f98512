package submit_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batchctl/batchctl/cost"
	"github.com/batchctl/batchctl/submit"
)

// writeChatRequests writes n chat request lines of about 540 bytes, the shape of the benchmark input.
func writeChatRequests(tb testing.TB, path string, n int) int64 {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	text := strings.Repeat("The product arrived on time and works as described. ", 7)
	for i := range n {
		fmt.Fprintf(w, `{"custom_id":"review-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Classify the sentiment of the review as positive, negative or neutral."},{"role":"user","content":%q}],"max_tokens":5}}`+"\n", i, text)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	st, _ := f.Stat()
	_ = f.Close()
	return st.Size()
}

// BenchmarkSpoolDryRun measures the dry-run path (read, check, cut, hash, spool) on pass-through chat requests.
func BenchmarkSpoolDryRun(b *testing.B) {
	benchmarkSpool(b, "", 100_000)
}

// BenchmarkSpoolDryRunPriced is BenchmarkSpoolDryRun with the price table batchctl submit always sets: every
// request's tokens are estimated and its output bounded, for estimated_cost_usd.
func BenchmarkSpoolDryRunPriced(b *testing.B) {
	benchmarkSpoolPriced(b, "", 100_000, cost.Default())
}

// BenchmarkSpoolBuiltin measures the built-in chat form built from data records.
func BenchmarkSpoolBuiltin(b *testing.B) {
	benchmarkSpool(b, "gpt-4o-mini", 20_000)
}

func benchmarkSpool(b *testing.B, model string, n int) { benchmarkSpoolPriced(b, model, n, nil) }

func benchmarkSpoolPriced(b *testing.B, model string, n int, prices *cost.Table) {
	dir := b.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	var size int64
	if model == "" {
		size = writeChatRequests(b, in, n)
	} else {
		f, _ := os.Create(in)
		w := bufio.NewWriter(f)
		for i := range n {
			fmt.Fprintf(w, `{"id":%d,"text":"The product arrived on time and works as described, five stars from me."}`+"\n", i)
		}
		_ = w.Flush()
		st, _ := f.Stat()
		size = st.Size()
		_ = f.Close()
	}
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		err := submit.Run(b.Context(), submit.Options{
			Inputs: []submit.Input{{Name: "in.jsonl", Path: in}}, Model: model, DryRun: true, Prices: prices,
			SpoolDir: filepath.Join(dir, "spool"), Out: io.Discard, Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

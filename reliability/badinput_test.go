package reliability_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// Exit codes of batchctl (cmd/batchctl/exitcode.go); scripts rely on them.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
	exitInput = 3
)

// badCase is one kind of bad input: a file named in.jsonl whose lines bad are wrong (good lines around them), the
// flags it is submitted with, and a word the error must contain.
type badCase struct {
	name    string
	content []byte
	args    []string
	files   map[string]string // further files in the working directory, e.g. a template
	bad     []int             // 1-based bad lines; nil means every non-blank line
	reason  string            // expected in the error of each bad line
}

const (
	modelA   = "gpt-4o-mini"
	chatURL  = "/v1/chat/completions"
	goodData = `{"text":"a good record"}`
)

// reqLine is a request line with the given custom_id (already JSON) and model.
func reqLine(customID, model string) string {
	return fmt.Sprintf(`{"custom_id":%s,"method":"POST","url":%q,"body":{"model":%q,"messages":[{"role":"user","content":"hi"}]}}`,
		customID, chatURL, model)
}

// lines joins lines with "\n" and ends the file with one.
func lines(ls ...string) []byte { return []byte(strings.Join(ls, "\n") + "\n") }

// around puts a bad line 2 between two good data records.
func around(bad string) []byte { return lines(goodData, bad, `{"text":"another good record"}`) }

func badCases() []badCase {
	gz := func() []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		for i := range 50 {
			fmt.Fprintf(w, `{"text":"record %d"}`+"\n", i)
		}
		_ = w.Close()
		return b.Bytes()
	}()
	garbage := func() []byte {
		rng := rand.New(rand.NewPCG(8, 8))
		b := make([]byte, 200)
		for i := range b {
			for b[i] = byte(rng.IntN(256)); b[i] == '\n' || b[i] == '\r'; b[i] = byte(rng.IntN(256)) {
			}
		}
		return []byte(goodData + "\n" + string(b) + "\n" + goodData + "\n")
	}()
	utf16LE := func(s string) []byte {
		out := []byte{0xFF, 0xFE}
		for _, u := range utf16.Encode([]rune(s)) {
			out = append(out, byte(u), byte(u>>8))
		}
		return out
	}
	reqTmpl := map[string]string{"body.tmpl": `{{.req}}`}
	fieldTmpl := map[string]string{"body.tmpl": `{"model":"gpt-4o-mini","messages":[{"role":"user","content":{{json .text}}}],"n":{{.n}}}`}
	long := strings.Repeat("x", 3000)
	nearLimit := strings.Repeat("y", 1930)
	return []badCase{
		{name: "truncated JSON", content: around(`{"text":"cut off here`), bad: []int{2}, reason: "invalid JSON"},
		{name: "truncated last line", content: []byte(goodData + "\n" + `{"text":"the file ends mid-rec`), bad: []int{2}, reason: "invalid JSON"},
		{name: "unquoted keys", content: around(`{text: "a"}`), bad: []int{2}, reason: "invalid JSON"},
		{name: "trailing comma", content: around(`{"text":"a",}`), bad: []int{2}, reason: "invalid JSON"},
		{name: "single quotes", content: around(`{'text':'a'}`), bad: []int{2}, reason: "invalid JSON"},
		{name: "NaN literal", content: around(`{"text":NaN}`), bad: []int{2}, reason: "invalid JSON"},
		{name: "two objects on one line", content: around(`{"text":"a"}{"text":"b"}`), bad: []int{2}, reason: "invalid JSON"},
		{name: "raw tab in a string", content: around("{\"text\":\"a\tb\"}"), bad: []int{2}, reason: "invalid JSON"},
		{name: "invalid UTF-8", content: around("{\"text\":\"caf\xe9\"}"), bad: []int{2}, reason: "invalid UTF-8"},
		{name: "NUL byte in a string", content: around("{\"text\":\"a\x00b\"}"), bad: []int{2}, reason: "invalid JSON"},
		{name: "line of NUL bytes", content: around("\x00\x00\x00\x00\x00\x00"), bad: []int{2}, reason: "invalid JSON"},
		{name: "binary garbage", content: garbage, bad: []int{2}},
		{name: "gzip file", content: gz},
		{name: "UTF-16 file", content: utf16LE(goodData + "\n" + goodData + "\n")},
		{name: "BOM in the middle", content: around("\xEF\xBB\xBF" + goodData), bad: []int{2}, reason: "invalid JSON"},
		{name: "CR-only line ends", content: []byte(goodData + "\r" + goodData + "\r"), reason: "invalid JSON"},
		{name: "JSON array", content: around(`[{"text":"a"}]`), bad: []int{2}, reason: "not a JSON object"},
		{name: "JSON string", content: around(`"just a string"`), bad: []int{2}, reason: "not a JSON object"},
		{name: "JSON number", content: around(`42`), bad: []int{2}, reason: "not a JSON object"},
		{name: "JSON null", content: around(`null`), bad: []int{2}, reason: "not a JSON object"},
		{name: "empty object", content: around(`{}`), bad: []int{2}, reason: `"text" is missing`},
		{name: "missing text field", content: around(`{"content":"a"}`), bad: []int{2}, reason: `"text" is missing`},
		{name: "non-string text", content: around(`{"text":5}`), bad: []int{2}, reason: `want a string`},
		{name: "null text", content: around(`{"text":null}`), bad: []int{2}, reason: `want a string`},
		{name: "duplicate custom_id", content: lines(reqLine(`"c-1"`, modelA), reqLine(`"c-2"`, modelA), reqLine(`"c-1"`, modelA)),
			bad: []int{3}, reason: "repeated"},
		{name: "duplicate id field", content: lines(`{"id":"r-1","text":"a"}`, `{"id":"r-2","text":"b"}`, `{"id":"r-1","text":"c"}`),
			args: []string{"--id-field", "id"}, bad: []int{3}, reason: "repeated"},
		{name: "missing id field", content: lines(`{"id":"r-1","text":"a"}`, `{"text":"b"}`), args: []string{"--id-field", "id"},
			bad: []int{2}, reason: "missing"},
		{name: "empty id field", content: lines(`{"id":"r-1","text":"a"}`, `{"id":"","text":"b"}`), args: []string{"--id-field", "id"},
			bad: []int{2}, reason: "id field"},
		{name: "fractional id field", content: lines(`{"id":1,"text":"a"}`, `{"id":1.5,"text":"b"}`), args: []string{"--id-field", "id"},
			bad: []int{2}, reason: "id field"},
		{name: "object id field", content: lines(`{"id":1,"text":"a"}`, `{"id":{"n":2},"text":"b"}`), args: []string{"--id-field", "id"},
			bad: []int{2}, reason: "id field"},
		{name: "non-string custom_id", content: lines(reqLine(`"c-1"`, modelA), reqLine(`7`, modelA)), bad: []int{2}, reason: "custom_id"},
		{name: "empty custom_id", content: lines(reqLine(`"c-1"`, modelA), reqLine(`""`, modelA)), bad: []int{2}, reason: "custom_id"},
		{name: "request line without custom_id", content: lines(reqLine(`"c-1"`, modelA),
			`{"method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini"}}`), bad: []int{2}, reason: "custom_id"},
		{name: "missing body", content: lines(reqLine(`"c-1"`, modelA), `{"custom_id":"c-2","method":"POST","url":"/v1/chat/completions"}`),
			bad: []int{2}, reason: "no body"},
		{name: "string body", content: lines(reqLine(`"c-1"`, modelA), `{"custom_id":"c-2","body":"hello"}`), bad: []int{2}, reason: "body"},
		{name: "null body", content: lines(reqLine(`"c-1"`, modelA), `{"custom_id":"c-2","body":null}`), bad: []int{2}, reason: "body"},
		{name: "array body", content: lines(reqLine(`"c-1"`, modelA), `{"custom_id":"c-2","body":[1]}`), bad: []int{2}, reason: "body"},
		{name: "body without model", content: lines(reqLine(`"c-1"`, modelA), `{"custom_id":"c-2","body":{"messages":[]}}`),
			bad: []int{2}, reason: "no model"},
		{name: "wrong url", content: lines(reqLine(`"c-1"`, modelA),
			`{"custom_id":"c-2","method":"POST","url":"/v1/embeddings","body":{"model":"gpt-4o-mini","input":"a"}}`), bad: []int{2}, reason: "url"},
		{name: "unknown url", content: lines(reqLine(`"c-1"`, modelA),
			`{"custom_id":"c-2","method":"POST","url":"/v2/chat","body":{"model":"gpt-4o-mini"}}`), bad: []int{2}, reason: "url"},
		{name: "wrong method", content: lines(reqLine(`"c-1"`, modelA),
			`{"custom_id":"c-2","method":"GET","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini"}}`), bad: []int{2}, reason: "method"},
		{name: "key twice", content: lines(reqLine(`"c-1"`, modelA),
			`{"custom_id":"c-2","custom_id":"c-3","body":{"model":"gpt-4o-mini"}}`), bad: []int{2}, reason: "twice"},
		{name: "mixed models", content: lines(reqLine(`"c-1"`, modelA), reqLine(`"c-2"`, "gpt-4o"), reqLine(`"c-3"`, modelA)),
			bad: []int{2}, reason: "second model"},
		{name: "line over the byte limit", content: around(`{"text":"` + long + `"}`), args: []string{"--max-bytes", "2000"},
			bad: []int{2}, reason: "over the limit"},
		{name: "request over the byte limit", content: around(`{"text":"` + nearLimit + `"}`), args: []string{"--max-bytes", "2000"},
			bad: []int{2}, reason: "over the batch limit"},
		{name: "template renders invalid JSON", content: lines(`{"text":"a","n":1}`, `{"text":"b","n":"two"}`, `{"text":"c","n":3}`),
			args: []string{"--template", "body.tmpl"}, files: fieldTmpl, bad: []int{2}, reason: "invalid JSON"},
		{name: "template renders no object", content: lines(`{"req":"{\"model\":\"gpt-4o-mini\"}"}`, `{"req":"[1,2]"}`),
			args: []string{"--template", "body.tmpl"}, files: reqTmpl, bad: []int{2}, reason: "want a JSON object"},
		{name: "template field missing", content: lines(`{"text":"a","n":1}`, `{"text":"b"}`),
			args: []string{"--template", "body.tmpl"}, files: fieldTmpl, bad: []int{2}, reason: "n"},
		{name: "text format invalid UTF-8", content: []byte("first question\nsecond \xff\xfe question\nthird question\n"),
			args: []string{"--format", "text"}, bad: []int{2}, reason: "invalid UTF-8"},
		{name: "many bad lines", content: lines(goodData, `{`, goodData, `[]`, `{"text":1}`, goodData, "\x01"), bad: []int{2, 4, 5, 7}},
	}
}

// inputLines splits a file as batchctl reads it: "\n" ends a line, a "\r" before it is dropped.
func inputLines(content []byte) [][]byte {
	var out [][]byte
	rest := content
	for len(rest) > 0 {
		line, after, found := bytes.Cut(rest, []byte{'\n'})
		out = append(out, bytes.TrimSuffix(line, []byte{'\r'}))
		if !found {
			break
		}
		rest = after
	}
	return out
}

// rejected is one line of a --rejects file.
type rejected struct {
	Source string  `json:"source"`
	Line   int     `json:"line"`
	Reason string  `json:"reason"`
	Record *string `json:"record"`
}

// testBadInput submits every kind of bad input twice: plainly (exit 3, an error naming file and line, nothing
// uploaded) and with --skip-invalid (exit 0, the rejects file holds exactly the bad lines, the batch exactly the good
// ones). Then the kinds that look bad but are accepted by design, and bad paths.
func testBadInput(t *testing.T, tl *tally) {
	cases := badCases()
	require.GreaterOrEqual(t, len(cases), 30)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tl.badInputs.Add(1)
			badInputCase(t, tl, c)
		})
	}
	t.Run("accepted by design", func(t *testing.T) { testAcceptedInput(t, tl) })
	t.Run("bad paths", func(t *testing.T) { testBadPaths(t, tl) })
}

func badInputCase(t *testing.T, tl *tally, c badCase) {
	e := newEnv(t, emulator.Options{})
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, "in.jsonl"), c.content, 0o600))
	for name, text := range c.files {
		require.NoError(t, os.WriteFile(filepath.Join(e.dir, name), []byte(text), 0o600))
	}
	all := inputLines(c.content)
	bad := c.bad
	if bad == nil {
		for i, l := range all {
			if len(bytes.TrimSpace(l)) > 0 {
				bad = append(bad, i+1)
			}
		}
	}
	isBad := map[int]bool{}
	for _, n := range bad {
		isBad[n] = true
	}
	args := append([]string{"submit", "--model", modelA}, c.args...)

	p := e.run(t, tl, append(args, "in.jsonl")...)
	stderr := p.stderr.String()
	require.Equal(t, exitInput, p.code, "exit code; stderr:\n%s", stderr)
	for _, n := range bad {
		require.Contains(t, stderr, fmt.Sprintf("in.jsonl:%d: ", n), "the error names file and line")
	}
	for n := range all {
		if !isBad[n+1] {
			require.NotContains(t, stderr, fmt.Sprintf("in.jsonl:%d: ", n+1), "a good line is not reported")
		}
	}
	if c.reason != "" {
		require.Contains(t, stderr, c.reason)
	}
	require.Empty(t, p.stdout.String(), "no batch line")
	require.Zero(t, e.emu.Stats().FileUploads, "nothing uploaded")
	require.Zero(t, e.emu.Stats().BatchCreates, "no batch created")

	p = e.run(t, tl, append(args, "--skip-invalid", "--rejects", "rejects.jsonl", "in.jsonl")...)
	require.Equal(t, exitOK, p.code, "with --skip-invalid; stderr:\n%s", p.stderr.String())
	f, err := os.Open(filepath.Join(e.dir, "rejects.jsonl"))
	require.NoError(t, err)
	defer f.Close()
	var got []int
	var notAsRead []string // rejected lines whose record is not the line as read
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r rejected
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r), "rejects line %q", sc.Text())
		require.Equal(t, "in.jsonl", r.Source)
		require.NotEmpty(t, r.Reason)
		got = append(got, r.Line)
		require.True(t, r.Line >= 1 && r.Line <= len(all), "rejected line %d exists", r.Line)
		if r.Record == nil {
			require.Contains(t, r.Reason, "over the limit", "only a line too long to hold comes without its record")
			continue
		}
		// JSON holds text: bytes that are not UTF-8 come back as U+FFFD, as encoding/json writes them.
		want, err := json.Marshal(string(all[r.Line-1]))
		require.NoError(t, err)
		var wantText string
		require.NoError(t, json.Unmarshal(want, &wantText))
		if r.Line == 1 {
			wantText = strings.TrimPrefix(wantText, "\uFEFF")
		}
		if *r.Record != wantText {
			notAsRead = append(notAsRead, fmt.Sprintf("line %d (%s): record %.100q", r.Line, r.Reason, *r.Record))
		}
	}
	require.NoError(t, sc.Err())
	require.Equal(t, bad, got, "the rejects file holds exactly the bad lines")
	tl.records.Add(int64(len(all)))

	// The good lines went out, each once; the bad ones did not.
	good := len(all) - len(bad)
	for _, l := range all {
		if len(bytes.TrimSpace(l)) == 0 {
			good--
		}
	}
	var requests int64
	for _, b := range waitValidated(t, e.emu) {
		requests += b.Total
	}
	if good == 0 {
		require.Empty(t, e.emu.Batches(), "no batch of nothing")
	}
	require.EqualValues(t, good, requests, "the good lines are submitted")
	require.Empty(t, notAsRead, "every rejected record is in --rejects as the input line, so it can be fixed and fed back")
}

// testAcceptedInput checks the inputs that look odd but are accepted by design: a UTF-8 byte order mark on line 1
// (editors write it), CRLF line ends, blank and whitespace-only lines (skipped, line numbers still count them), a
// last line without newline. Each gives exactly the requests of its records, with custom_ids numbered by line.
func testAcceptedInput(t *testing.T, tl *tally) {
	for _, c := range []struct {
		name    string
		content string
		ids     []string
	}{
		{"BOM", "\xEF\xBB\xBF" + `{"text":"a"}` + "\n" + `{"text":"b"}` + "\n", []string{"in.jsonl:1", "in.jsonl:2"}},
		{"CRLF", `{"text":"a"}` + "\r\n" + `{"text":"b"}` + "\r\n", []string{"in.jsonl:1", "in.jsonl:2"}},
		{"BOM and CRLF", "\xEF\xBB\xBF" + `{"text":"a"}` + "\r\n" + `{"text":"b"}` + "\r\n", []string{"in.jsonl:1", "in.jsonl:2"}},
		{"blank lines", "\n" + `{"text":"a"}` + "\n\n\n" + `{"text":"b"}` + "\n\n", []string{"in.jsonl:2", "in.jsonl:5"}},
		{"whitespace lines", " \t \n" + `{"text":"a"}` + "\n  \r\n" + `{"text":"b"}` + "\n", []string{"in.jsonl:2", "in.jsonl:4"}},
		{"no final newline", `{"text":"a"}` + "\n" + `{"text":"b"}`, []string{"in.jsonl:1", "in.jsonl:2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tl.badInputs.Add(1)
			e := newEnv(t, emulator.Options{})
			require.NoError(t, os.WriteFile(filepath.Join(e.dir, "in.jsonl"), []byte(c.content), 0o600))
			p := e.run(t, tl, "submit", "--model", modelA, "in.jsonl")
			require.Equal(t, exitOK, p.code, p.stderr.String())
			bs := waitValidated(t, e.emu)
			require.Len(t, bs, 1)
			require.Equal(t, c.ids, bs[0].CustomIDs)
			tl.records.Add(int64(len(c.ids)))
		})
	}
	t.Run("empty file", func(t *testing.T) {
		// An empty file (or one of blank lines) has no records: nothing to submit, which is not an error, so a
		// pipeline step that happens to produce no records does not fail. Nothing is uploaded.
		tl.badInputs.Add(1)
		for _, content := range []string{"", "\n\n \r\n"} {
			e := newEnv(t, emulator.Options{})
			require.NoError(t, os.WriteFile(filepath.Join(e.dir, "in.jsonl"), []byte(content), 0o600))
			p := e.run(t, tl, "submit", "--model", modelA, "in.jsonl")
			require.Equal(t, exitOK, p.code, p.stderr.String())
			require.Empty(t, p.stdout.String())
			require.Zero(t, e.emu.Stats().FileUploads)
		}
	})
}

// testBadPaths gives submit inputs it cannot read as a file of records: a directory, a path that does not exist, a
// file it may not read. Each must fail with the path named and nothing uploaded; the exit code must say "fix the
// input or the command line" (3 or 2), not "something failed, retry" (1).
func testBadPaths(t *testing.T, tl *tally) {
	cases := []struct {
		name string
		make func(t *testing.T, dir string) string // returns the argument
	}{
		{"directory", func(t *testing.T, dir string) string {
			require.NoError(t, os.Mkdir(filepath.Join(dir, "records"), 0o700))
			return "records"
		}},
		{"missing file", func(t *testing.T, dir string) string { return "no-such-file.jsonl" }},
		{"dangling symlink", func(t *testing.T, dir string) string {
			require.NoError(t, os.Symlink(filepath.Join(dir, "gone.jsonl"), filepath.Join(dir, "link.jsonl")))
			return "link.jsonl"
		}},
		{"unreadable file", func(t *testing.T, dir string) string {
			if os.Geteuid() == 0 {
				// root reads a file of mode 000 anyway; there is no unreadable regular file to give it.
				t.Skip("running as root: permissions do not stop root from reading a file")
			}
			path := filepath.Join(dir, "secret.jsonl")
			require.NoError(t, os.WriteFile(path, []byte(goodData+"\n"), 0o000))
			return "secret.jsonl"
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tl.badInputs.Add(1)
			e := newEnv(t, emulator.Options{})
			arg := c.make(t, e.dir)
			for _, extra := range [][]string{nil, {"--skip-invalid", "--rejects", "rejects.jsonl"}} {
				p := e.run(t, tl, append(append([]string{"submit", "--model", modelA}, extra...), arg)...)
				stderr := p.stderr.String()
				require.NotEqual(t, exitOK, p.code, "a path that cannot be read fails even with --skip-invalid")
				require.Contains(t, stderr, arg, "the error names the path")
				require.Zero(t, e.emu.Stats().FileUploads, "nothing uploaded")
				require.Empty(t, p.stdout.String())
				require.Equal(t, exitInput, p.code, "an unreadable input is bad input; stderr: %s", tail(stderr, 300))
			}
		})
	}
}

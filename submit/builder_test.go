package submit_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/submit"
)

// FuzzTemplate renders fuzzed templates on a fuzzed record: whatever comes out, a body that CompactBody accepts is
// one valid JSON object on one line.
func FuzzTemplate(f *testing.F) {
	f.Add(`{"model":"m","input":{{json .text}}}`, `{"text":"hi \"there\"\n"}`)
	f.Add(`{"model":"m","n":{{.n}}}`, `{"n":12345678901234567890}`)
	f.Add(`{{range .xs}}{{.}}{{end}}`, `{"xs":[1,2]}`)
	f.Fuzz(func(t *testing.T, text, record string) {
		tmpl, err := submit.ParseTemplate("fuzz", text)
		if err != nil {
			return
		}
		var data any
		d := json.NewDecoder(strings.NewReader(record))
		d.UseNumber()
		if d.Decode(&data) != nil {
			return
		}
		var out strings.Builder
		if tmpl.Execute(&out, data) != nil {
			return
		}
		body, err := submit.CompactBody([]byte(out.String()))
		if err != nil {
			return
		}
		require.True(t, json.Valid(body))
		require.Equal(t, byte('{'), body[0])
		require.NotContains(t, string(body), "\n")
	})
}

func TestBuiltinBody(t *testing.T) {
	t.Parallel()
	got := submit.BuiltinBody("/v1/completions", "m", "ignored", []byte(`"x"`))
	require.JSONEq(t, `{"model":"m","prompt":"x"}`, string(got))
	got = submit.BuiltinBody("/v1/moderations", "omni-moderation-latest", "", []byte(`["a","b"]`))
	require.JSONEq(t, `{"model":"omni-moderation-latest","input":["a","b"]}`, string(got))
}

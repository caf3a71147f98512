package anthropic

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/jsonl"
)

const testMessage = `{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5",` +
	`"content":[{"type":"text","text":"Positive."}],"stop_reason":"end_turn","stop_sequence":null,` +
	`"usage":{"input_tokens":12,"output_tokens":3}}`

// Each result type becomes the OpenAI output line the loader reads: succeeded is a 200 response with the message
// as its body; errored, canceled and expired are error lines, errored with the API's own error type and message.
func TestAppendOutputLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, line string
		customID   string
		body       string // the response body, for a succeeded result
		code, msg  string // the error, for the others
	}{
		{
			name:     "succeeded",
			line:     `{"custom_id":"req-1","result":{"type":"succeeded","message":` + testMessage + `}}`,
			customID: "req-1", body: testMessage,
		},
		{
			name: "errored",
			line: `{"custom_id":"r2","result":{"type":"errored","error":{"type":"error","error":` +
				`{"type":"invalid_request_error","message":"prompt is too long: 215343 tokens > 200000 maximum"},"request_id":"req_9"}}}`,
			customID: "r2", code: "invalid_request_error", msg: "prompt is too long: 215343 tokens > 200000 maximum",
		},
		{
			name:     "errored, error not nested",
			line:     `{"custom_id":"r3","result":{"type":"errored","error":{"type":"api_error","message":"Internal server error"}}}`,
			customID: "r3", code: "api_error", msg: "Internal server error",
		},
		{
			name:     "errored without details",
			line:     `{"custom_id":"r4","result":{"type":"errored"}}`,
			customID: "r4", code: "errored", msg: "the request errored",
		},
		{
			name:     "canceled",
			line:     `{"custom_id":"r5","result":{"type":"canceled"}}`,
			customID: "r5", code: "canceled", msg: "the batch was canceled before this request was processed",
		},
		{
			name:     "expired",
			line:     `{"custom_id":"r6","result":{"type":"expired"}}`,
			customID: "r6", code: "expired", msg: "the batch reached its 24 h expiry before this request was processed",
		},
		{
			name:     "a custom_id with escapes",
			line:     `{"custom_id":"a\"b\\c\u00e9<","result":{"type":"canceled"}}`,
			customID: `a"b\cé<`, code: "canceled", msg: "the batch was canceled before this request was processed",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := appendOutputLine([]byte("kept"), []byte(tc.line))
			require.NoError(t, err)
			require.True(t, bytes.HasPrefix(out, []byte("kept")), "appends")
			require.True(t, bytes.HasSuffix(out, []byte("\n")), "one line, newline included")
			line := out[len("kept") : len(out)-1]
			require.NotContains(t, string(line), "\n")

			var ol jsonl.OutputLine
			require.NoError(t, jsonl.DecodeOutput(line, &ol))
			require.Equal(t, tc.customID, ol.CustomID)
			require.Empty(t, ol.ID)
			if tc.body != "" {
				require.Nil(t, ol.Error)
				require.NotNil(t, ol.Response)
				require.Equal(t, 200, ol.Response.StatusCode)
				require.JSONEq(t, tc.body, string(ol.Response.Body))
				return
			}
			require.Nil(t, ol.Response)
			require.Equal(t, &jsonl.LineError{Code: tc.code, Message: tc.msg}, ol.Error)
		})
	}
}

// A result line that cannot be converted is an error saying why: the load fails rather than lose a result.
func TestAppendOutputLineRefuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ line, err string }{
		{`{"result":{"type":"canceled"}}`, "without a custom_id"},
		{`{"custom_id":7,"result":{"type":"canceled"}}`, "without a custom_id"},
		{`{"custom_id":"","result":{"type":"canceled"}}`, "without a custom_id"},
		{`{"custom_id":"a","result":{"type":"succeeded"}}`, "succeeded result without a message"},
		{`{"custom_id":"a","result":{"type":"succeeded","message":"hi"}}`, "succeeded result without a message"},
		{`{"custom_id":"a","result":{"type":"bogus"}}`, `unknown result type "bogus"`},
		{`{"custom_id":"a"}`, `unknown result type ""`},
		{`not json`, "invalid JSON"},
		{``, "invalid JSON"},
		// Cut short, as a results line of a download that stopped mid-line: its custom_id and its type read well.
		{`{"custom_id":"a","result":{"type":"succeeded","message":{"id":"m","content":[{"text":"cut`, "invalid JSON"},
		{`{"custom_id":"a","result":{"type":"expired"}`, "invalid JSON"},
	} {
		_, err := appendOutputLine(nil, []byte(tc.line))
		require.ErrorContains(t, err, tc.err, "line %s", tc.line)
	}
}

// convertResults converts a whole results file, and what it writes decodes with the loader's decoder line for
// line; a line it cannot convert fails the conversion, naming the source and the line.
func TestConvertResults(t *testing.T) {
	t.Parallel()
	in := strings.Join([]string{
		`{"custom_id":"b","result":{"type":"succeeded","message":` + testMessage + `}}`,
		`{"custom_id":"a","result":{"type":"errored","error":{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}}}`,
		`{"custom_id":"c","result":{"type":"expired"}}` + "\r", // a line ending in \r\n reads the same
		`{"custom_id":"d","result":{"type":"canceled"}}`,
	}, "\n") + "\n"
	var out bytes.Buffer
	require.NoError(t, convertResults(&out, strings.NewReader(in), "results"))

	dec := jsonl.NewOutputDecoder(&out, "converted")
	type row struct {
		id     string
		status int
		code   string
	}
	var got []row
	for {
		ol, err := dec.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		r := row{id: ol.CustomID}
		if ol.Response != nil {
			r.status = ol.Response.StatusCode
		}
		if ol.Error != nil {
			r.code = ol.Error.Code
		}
		got = append(got, r)
	}
	require.Equal(t, []row{{"b", 200, ""}, {"a", 0, "overloaded_error"}, {"c", 0, "expired"}, {"d", 0, "canceled"}}, got)

	bad := `{"custom_id":"a","result":{"type":"canceled"}}` + "\n" + `{"custom_id":"b","result":{"type":"nope"}}` + "\n"
	err := convertResults(io.Discard, strings.NewReader(bad), "https://api.example/v1/messages/batches/m/results")
	require.ErrorContains(t, err, `https://api.example/v1/messages/batches/m/results:2: unknown result type "nope"`)
}

// FuzzAppendOutputLine: whatever a results line holds, it is refused, or converted to one output line the loader
// decodes, under the line's custom_id.
func FuzzAppendOutputLine(f *testing.F) {
	f.Add([]byte(`{"custom_id":"req-1","result":{"type":"succeeded","message":` + testMessage + `}}`))
	f.Add([]byte(`{"custom_id":"r2","result":{"type":"errored","error":{"type":"error","error":{"type":"api_error","message":"x"}}}}`))
	f.Add([]byte(`{"custom_id":"r3","result":{"type":"expired"}}`))
	f.Add([]byte(`{"custom_id":"a\u00e9","result":{"type":"canceled"}}`))
	f.Add([]byte(`{"custom_id":"a","result":{"type":"succeeded","message":{"id":"m","content":[{"text":"cut`))
	f.Fuzz(func(t *testing.T, line []byte) {
		out, err := appendOutputLine(nil, line)
		if err != nil {
			return
		}
		require.True(t, bytes.HasSuffix(out, []byte("\n")))
		out = out[:len(out)-1]
		require.NotContains(t, string(out), "\n", "one line")
		var ol jsonl.OutputLine
		require.NoError(t, jsonl.DecodeOutput(out, &ol), "converted %q to %q", line, out)
		require.Equal(t, jsonl.Peek(line, "custom_id").String(), ol.CustomID)
	})
}

package anthropic

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/tidwall/gjson"

	"github.com/batchctl/batchctl/jsonl"
)

// convertResults copies Message Batch result lines from r to w as OpenAI output lines:
//
//	{"custom_id":X,"result":{"type":"succeeded","message":M}}
//	  → {"id":null,"custom_id":X,"response":{"status_code":200,"request_id":"","body":M},"error":null}
//	{"custom_id":X,"result":{"type":"errored","error":{"type":"error","error":{"type":T,"message":S}}}}
//	  → {"id":null,"custom_id":X,"response":null,"error":{"code":T,"message":S}}
//	{"custom_id":X,"result":{"type":"canceled"|"expired"}}
//	  → {"id":null,"custom_id":X,"response":null,"error":{"code":"canceled"|"expired","message":…}}
//
// A line it cannot read is an error naming the line: the load fails rather than lose a result.
func convertResults(w io.Writer, r io.Reader, source string) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	rd := jsonl.NewReader(r, source, 0)
	var out []byte
	for {
		line, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return bw.Flush()
		}
		if err != nil {
			return err
		}
		if out, err = appendOutputLine(out[:0], line); err != nil {
			return fmt.Errorf("%s:%d: %w", source, rd.Line(), err)
		}
		if _, err := bw.Write(out); err != nil {
			return err
		}
	}
}

// appendOutputLine appends the OpenAI output line of one result line, newline included. The line is checked whole
// first: gjson reads the fields of a line cut short as well as of a whole one, and would copy a cut message into
// the output as if it were JSON.
func appendOutputLine(out, line []byte) ([]byte, error) {
	if !gjson.ValidBytes(line) {
		return nil, errors.New("invalid JSON")
	}
	id := jsonl.Peek(line, "custom_id")
	if id.Type != gjson.String || id.Str == "" {
		return nil, errors.New("result line without a custom_id")
	}
	result := jsonl.Peek(line, "result")
	out = append(out, `{"id":null,"custom_id":`...)
	out = jsonl.AppendString(out, id.Str)
	switch t := result.Get("type").Str; t {
	case "succeeded":
		msg := result.Get("message")
		if !msg.IsObject() {
			return nil, errors.New("succeeded result without a message")
		}
		out = append(out, `,"response":{"status_code":200,"request_id":"","body":`...)
		out = append(out, msg.Raw...)
		out = append(out, `},"error":null}`...)
	case "errored":
		inner := result.Get("error.error")
		if !inner.Exists() {
			inner = result.Get("error")
		}
		out = appendError(out, gjsonOr(inner.Get("type").Str, "errored"), gjsonOr(inner.Get("message").Str, "the request errored"))
	case "canceled":
		out = appendError(out, "canceled", "the batch was canceled before this request was processed")
	case "expired":
		out = appendError(out, "expired", "the batch reached its 24 h expiry before this request was processed")
	default:
		return nil, fmt.Errorf("unknown result type %q", t)
	}
	return append(out, '\n'), nil
}

func appendError(out []byte, code, message string) []byte {
	out = append(out, `,"response":null,"error":{"code":`...)
	out = jsonl.AppendString(out, code)
	out = append(out, `,"message":`...)
	out = jsonl.AppendString(out, message)
	return append(out, `}}`...)
}

func gjsonOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

package jsonl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tidwall/gjson"
)

// OutputLine is one line of a batch's output file or error file.
type OutputLine struct {
	ID       string     `json:"id"`
	CustomID string     `json:"custom_id"`
	Response *Response  `json:"response"`
	Error    *LineError `json:"error"`
}

// Response is the answer to one request; StatusCode may be any HTTP status, not only 200.
type Response struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

// LineError is why a request got no response, for example code "batch_expired".
type LineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// DecodeOutput decodes one output or error line into out, reusing out's Response and Error when it has them.
// Response.Body aliases line. The error is a plain error whose text is the reason.
func DecodeOutput(line []byte, out *OutputLine) error {
	resp, lerr := out.Response, out.Error
	*out = OutputLine{}
	if !gjson.ValidBytes(line) {
		return fmt.Errorf("invalid JSON: %s", jsonSyntaxError(line))
	}
	root := gjson.Parse(unsafeString(line))
	if !root.IsObject() {
		return fmt.Errorf("not a JSON object but %s", kindOf(root))
	}
	var err error
	root.ForEach(func(key, value gjson.Result) bool {
		switch key.Str {
		case "id":
			out.ID, err = optString("id", value)
		case "custom_id":
			out.CustomID, err = optString("custom_id", value)
		case "response":
			if value.Type == gjson.Null {
				return true
			}
			if !value.IsObject() {
				err = fmt.Errorf("response is %s, want an object", kindOf(value))
				return false
			}
			if resp == nil {
				resp = new(Response)
			}
			*resp = Response{}
			err = decodeResponse(line, value, resp)
			out.Response = resp
		case "error":
			if value.Type == gjson.Null {
				return true
			}
			if !value.IsObject() {
				err = fmt.Errorf("error is %s, want an object", kindOf(value))
				return false
			}
			if lerr == nil {
				lerr = new(LineError)
			}
			*lerr = LineError{}
			value.ForEach(func(k, v gjson.Result) bool {
				switch k.Str {
				case "code":
					lerr.Code, err = optString("error.code", v)
				case "message":
					lerr.Message, err = optString("error.message", v)
				}
				return err == nil
			})
			out.Error = lerr
		}
		return err == nil
	})
	if err != nil {
		return err
	}
	if out.CustomID == "" {
		return errors.New("output line has no custom_id")
	}
	if out.Response == nil && out.Error == nil {
		return errors.New("output line has neither response nor error")
	}
	return nil
}

func decodeResponse(line []byte, value gjson.Result, resp *Response) error {
	var err error
	value.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "status_code":
			if v.Type != gjson.Number || v.Num != float64(int(v.Num)) {
				err = fmt.Errorf("response.status_code is %s, want an integer", v.Raw)
				return false
			}
			resp.StatusCode = int(v.Num)
		case "request_id":
			resp.RequestID, err = optString("response.request_id", v)
		case "body":
			resp.Body = line[v.Index : v.Index+len(v.Raw)]
		}
		return err == nil
	})
	return err
}

// optString returns a string value, "" for null, and an error for any other kind.
func optString(name string, v gjson.Result) (string, error) {
	switch v.Type {
	case gjson.String:
		return strings.Clone(v.Str), nil
	case gjson.Null:
		return "", nil
	default:
		return "", fmt.Errorf("%s is %s, want a string", name, kindOf(v))
	}
}

// OutputDecoder reads the output or error file of a batch line by line, without holding the file in memory.
type OutputDecoder struct {
	r    *Reader
	line OutputLine
}

// NewOutputDecoder returns a decoder of r; source names r in errors.
func NewOutputDecoder(r io.Reader, source string) *OutputDecoder {
	return &OutputDecoder{r: NewReader(r, source, 0)}
}

// Next returns the next line. The OutputLine, its Response and its Error are reused by the next call, and
// Response.Body aliases the decoder's buffer: copy what must outlive the call. Blank lines are skipped. A bad line
// comes back as a *RecordError and decoding can go on; io.EOF ends the file; any other error ends it too.
func (d *OutputDecoder) Next() (*OutputLine, error) {
	for {
		b, err := d.r.Next()
		if err != nil {
			return nil, err
		}
		if len(strings.TrimSpace(unsafeString(b))) == 0 {
			continue
		}
		if err := DecodeOutput(b, &d.line); err != nil {
			return nil, &RecordError{Source: d.r.Source(), Line: d.r.Line(), Reason: err.Error()}
		}
		return &d.line, nil
	}
}

// Line returns the line number of the line last returned by Next.
func (d *OutputDecoder) Line() int { return d.r.Line() }

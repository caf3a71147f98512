package jsonl

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"github.com/tidwall/gjson"
)

// Endpoints of the Batch API that a request line may name in its url.
const (
	EndpointResponses       = "/v1/responses"
	EndpointChatCompletions = "/v1/chat/completions"
	EndpointEmbeddings      = "/v1/embeddings"
	EndpointCompletions     = "/v1/completions"
	EndpointModerations     = "/v1/moderations"
	EndpointImages          = "/v1/images/generations"
	EndpointImageEdits      = "/v1/images/edits"
	EndpointVideos          = "/v1/videos"
)

// Endpoints lists every endpoint the Batch API accepts, in the order of the API reference.
var Endpoints = []string{
	EndpointResponses, EndpointChatCompletions, EndpointEmbeddings, EndpointCompletions, EndpointModerations,
	EndpointImages, EndpointImageEdits, EndpointVideos,
}

// ValidEndpoint reports whether the Batch API accepts endpoint.
func ValidEndpoint(endpoint string) bool {
	for _, e := range Endpoints {
		if e == endpoint {
			return true
		}
	}
	return false
}

// Request is one line of a batch input file.
type Request struct {
	CustomID string          `json:"custom_id"`
	Method   string          `json:"method"`
	URL      string          `json:"url"`
	Body     json.RawMessage `json:"body"`
}

// AppendJSON appends r as one compact JSON line, without the newline, and returns the extended slice. Body is
// appended as it is: the caller vouches that it is one valid JSON object (Inspect checks that).
func (r *Request) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"custom_id":`...)
	dst = AppendString(dst, r.CustomID)
	dst = append(dst, `,"method":`...)
	dst = AppendString(dst, r.Method)
	dst = append(dst, `,"url":`...)
	dst = AppendString(dst, r.URL)
	dst = append(dst, `,"body":`...)
	dst = append(dst, r.Body...)
	return append(dst, '}')
}

// AppendString appends s as a JSON string. It escapes like encoding/json, HTML characters included, so the result
// is the same whichever encoder wrote a line.
func AppendString(dst []byte, s string) []byte {
	// Most strings need no escaping: copy them in one go.
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= 0x80 {
			b, _ := json.Marshal(s) // cannot fail for a string
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// Record is a first look at one input line: a JSON object that is either already a request line (it has a body, a
// method or a url) or a data record to be turned into one.
type Record struct {
	// IsRequest is true when the line is a request line; Request then holds it.
	IsRequest bool
	// Request holds custom_id, method, url and body of a request line. Body aliases the line; Method and URL are
	// empty when the line leaves them out.
	Request Request
	// Canonical is true when the line has exactly the four keys of a request line in their usual order, with
	// method and url present, so it can be written out as it is.
	Canonical bool
	// BodyOffset is where Request.Body starts in the line.
	BodyOffset int
}

// Inspect parses line, which must hold one JSON object, and tells a request line from a data record. It checks what
// makes a request line valid on its own: custom_id a non-empty string, body an object, method POST, url a string,
// no key twice. Whether the url matches the batch's endpoint is the caller's business. The error is a plain error
// whose text is the reason; wrap it in a RecordError with the source and line.
func Inspect(line []byte, rec *Record) error {
	*rec = Record{}
	if !gjson.ValidBytes(line) {
		return fmt.Errorf("invalid JSON: %s", jsonSyntaxError(line))
	}
	root := gjson.Parse(unsafeString(line))
	if !root.IsObject() {
		return fmt.Errorf("not a JSON object but %s", kindOf(root))
	}
	var (
		seen            [4]bool // custom_id, method, url, body
		n, order        int
		dup             string
		customID, body  gjson.Result
		method, url     gjson.Result
		canonicalOrder  = true
		requestKeyIndex = func(k string) int {
			switch k {
			case "custom_id":
				return 0
			case "method":
				return 1
			case "url":
				return 2
			case "body":
				return 3
			}
			return -1
		}
	)
	root.ForEach(func(key, value gjson.Result) bool {
		n++
		i := requestKeyIndex(key.Str)
		if i < 0 {
			canonicalOrder = false
			return true
		}
		if seen[i] {
			dup = key.Str
			return false
		}
		seen[i] = true
		if i != order {
			canonicalOrder = false
		}
		order++
		switch i {
		case 0:
			customID = value
		case 1:
			method = value
		case 2:
			url = value
		case 3:
			body = value
		}
		return true
	})
	if dup != "" {
		return fmt.Errorf("key %q appears twice", dup)
	}
	if !seen[1] && !seen[2] && !seen[3] {
		return nil // a data record
	}
	rec.IsRequest = true
	switch {
	case !seen[0]:
		return fmt.Errorf("request line has no custom_id")
	case customID.Type != gjson.String:
		return fmt.Errorf("custom_id is %s, want a string", kindOf(customID))
	case customID.Str == "":
		return fmt.Errorf("custom_id is empty")
	case !seen[3]:
		return fmt.Errorf("request line has no body")
	case !body.IsObject():
		return fmt.Errorf("body is %s, want an object", kindOf(body))
	}
	if seen[1] {
		if method.Type != gjson.String || method.Str != "POST" {
			return fmt.Errorf("method is %s, want \"POST\"", method.Raw)
		}
		rec.Request.Method = "POST"
	}
	if seen[2] {
		if url.Type != gjson.String {
			return fmt.Errorf("url is %s, want a string", kindOf(url))
		}
		rec.Request.URL = url.Str
	}
	// Str aliases line when custom_id has no escapes, and callers keep it past the line's life.
	rec.Request.CustomID = strings.Clone(customID.Str)
	rec.Request.Body = line[body.Index : body.Index+len(body.Raw)]
	rec.BodyOffset = body.Index
	rec.Canonical = canonicalOrder && n == 4 && body.Index > 0
	return nil
}

// Model returns the model named in a request body, or "" when it names none. body must be valid JSON.
func Model(body []byte) (string, error) {
	m, err := ModelView(body)
	return strings.Clone(m), err
}

// ModelView is Model without the copy: the string may alias body, so it is valid only while body is. A caller that
// sees the same model on every line keeps one copy instead of one per line.
func ModelView(body []byte) (string, error) {
	m := Peek(body, "model")
	switch m.Type {
	case gjson.Null:
		return "", nil
	case gjson.String:
		return m.Str, nil
	default:
		return "", fmt.Errorf("body.model is %s, want a string", kindOf(m))
	}
}

// Peek is gjson.GetBytes without its copy of the result: Raw, and Str unless it had escapes, alias b and are valid
// only while b is. For reading a field or two of a line that is about to be reused; copy what must outlive it.
func Peek(b []byte, path string) gjson.Result {
	return gjson.Get(unsafeString(b), path)
}

// EmbeddingInputs counts the inputs of an embeddings request body, as the Batch API sums them against its limit of
// 50 000 inputs per batch: one for a string or an array of token ids, one per element of an array of strings or of
// token arrays. body must be valid JSON.
func EmbeddingInputs(body []byte) (int, error) {
	in := gjson.Get(unsafeString(body), "input")
	switch {
	case in.Type == gjson.String:
		return 1, nil
	case in.IsArray():
		n, tokens := 0, true
		in.ForEach(func(_, v gjson.Result) bool {
			n++
			if v.Type != gjson.Number {
				tokens = false
			}
			return true
		})
		if tokens && n > 0 {
			return 1, nil
		}
		return n, nil
	case !in.Exists():
		return 0, fmt.Errorf("embeddings body has no input")
	default:
		return 0, fmt.Errorf("body.input is %s, want a string or an array", kindOf(in))
	}
}

func kindOf(r gjson.Result) string {
	switch r.Type {
	case gjson.Null:
		if !r.Exists() {
			return "missing"
		}
		return "null"
	case gjson.False, gjson.True:
		return "a boolean"
	case gjson.Number:
		return "a number"
	case gjson.String:
		return "a string"
	default:
		if r.IsArray() {
			return "an array"
		}
		return "an object"
	}
}

// jsonSyntaxError asks encoding/json where the syntax breaks: its messages name the offset and the offending
// character, which gjson's yes/no does not. It runs only on lines already known to be bad.
func jsonSyntaxError(line []byte) string {
	var v any
	err := json.Unmarshal(line, &v)
	if se, ok := err.(*json.SyntaxError); ok {
		return se.Error() + " at byte " + strconv.FormatInt(se.Offset, 10)
	}
	if err != nil {
		return err.Error()
	}
	return "malformed"
}

// unsafeString views b as a string without copying. gjson only reads it; results that must outlive b are copied.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// Package pack is prompt packing: several records in one chat or responses request, each under an index, answered
// with structured output (a JSON schema of an object holding an array of {index, answer}), and the answer split
// back onto the records. submit builds packed bodies with it, poll unpacks their answers and resends failed records
// in smaller packs; neither needs to know how the other side words the prompt.
package pack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/batchctl/batchctl/jsonl"
)

// SchemaName is the name of the packed answer's JSON schema in the request's response format.
const SchemaName = "packed_answers"

// MaxSize bounds --pack: a prompt of more records than this is past the point where packing saves anything and
// where models keep track of the items.
const MaxSize = 1000

// DefaultAnswerSchema is one record's answer when the user gives no schema: a string.
var DefaultAnswerSchema = json.RawMessage(`{"type":"string"}`)

// Instruction tells the model how a packed prompt is laid out and how to answer it. It goes in its own system
// (chat) or developer (responses) message after the user's own instructions, which apply to each item.
const Instruction = `The user message holds several items, each headed "Item N:" on its own line, where N is ` +
	`its index. Apply the instructions to each item on its own. Reply with one JSON object ` +
	`{"answers": [{"index": N, "answer": ...}]} holding exactly one entry per item.`

// Schema is the packed response's JSON schema for n records whose answers follow answer: an object holding
// exactly n items {index: 1..n, answer}. It is written for OpenAI's strict structured outputs (every property
// required, no additional properties).
func Schema(answer json.RawMessage, n int) []byte {
	b := []byte(`{"type":"object","properties":{"answers":{"type":"array","minItems":`)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"maxItems":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"items":{"type":"object","properties":{"index":{"type":"integer","minimum":1,"maximum":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `},"answer":`...)
	b = append(b, answer...)
	b = append(b, `},"required":["index","answer"],"additionalProperties":false}}},"required":["answers"],"additionalProperties":false}`...)
	return b
}

// CheckAnswerSchema checks that a user's answer schema is one JSON object that compiles as a JSON schema, and
// returns it compacted.
func CheckAnswerSchema(raw []byte) (json.RawMessage, error) {
	var out bytes.Buffer
	if err := json.Compact(&out, raw); err != nil {
		return nil, fmt.Errorf("answer schema: %w", err)
	}
	if out.Len() == 0 || out.Bytes()[0] != '{' {
		return nil, fmt.Errorf("answer schema: want a JSON object")
	}
	if _, err := NewValidator(out.Bytes()); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// Endpoints that packing builds bodies for.
const (
	EndpointChat      = jsonl.EndpointChatCompletions
	EndpointResponses = jsonl.EndpointResponses
)

// Supported reports whether requests to endpoint can be packed.
func Supported(endpoint string) bool {
	return endpoint == EndpointChat || endpoint == EndpointResponses
}

// Form is what a built-in packed body is made of besides its items.
type Form struct {
	Endpoint string
	Model    string
	System   string // the user's instructions, applied to each item; may be empty
	MaxOut   int64  // the answer's token cap, 0 for none
	// Answer is one record's answer schema (DefaultAnswerSchema when nil).
	Answer json.RawMessage
}

// AppendBody appends the packed request body of texts (each a JSON string, indexed 1..n in order) to b: the
// user's instructions, the packing Instruction, and one user message holding each text as a content part headed
// "Item <index>:" on its own line.
func (f *Form) AppendBody(b []byte, texts [][]byte) []byte {
	b = append(b, `{"model":`...)
	b = jsonl.AppendString(b, f.Model)
	if f.MaxOut > 0 {
		if f.Endpoint == EndpointResponses {
			b = append(b, `,"max_output_tokens":`...)
		} else {
			b = append(b, `,"max_completion_tokens":`...)
		}
		b = strconv.AppendInt(b, f.MaxOut, 10)
	}
	if f.Endpoint == EndpointResponses {
		if f.System != "" {
			b = append(b, `,"instructions":`...)
			b = jsonl.AppendString(b, f.System)
		}
		b = append(b, `,"input":[{"role":"developer","content":`...)
		b = jsonl.AppendString(b, Instruction)
		b = append(b, `},`...)
	} else {
		b = append(b, `,"messages":[`...)
		if f.System != "" {
			b = append(b, `{"role":"system","content":`...)
			b = jsonl.AppendString(b, f.System)
			b = append(b, `},`...)
		}
		b = append(b, `{"role":"system","content":`...)
		b = jsonl.AppendString(b, Instruction)
		b = append(b, `},`...)
	}
	b = AppendItems(b, f.Endpoint, texts)
	b = append(b, ']')
	b = AppendFormat(b, f.Endpoint, f.answer(), len(texts))
	return append(b, '}')
}

func (f *Form) answer() json.RawMessage {
	if len(f.Answer) == 0 {
		return DefaultAnswerSchema
	}
	return f.Answer
}

// AppendItems appends the user message of a packed request: one content part per text (a JSON string), its text
// "Item <index>:", a newline and the text, indexes 1..n in order.
func AppendItems(b []byte, endpoint string, texts [][]byte) []byte {
	part := `{"type":"text","text":"Item `
	if endpoint == EndpointResponses {
		part = `{"type":"input_text","text":"Item `
	}
	b = append(b, `{"role":"user","content":[`...)
	for i, t := range texts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, part...)
		b = strconv.AppendInt(b, int64(i+1), 10)
		b = append(b, `:\n`...)
		b = append(b, bytes.TrimPrefix(t, []byte{'"'})...) // the string's content and closing quote
		b = append(b, '}')
	}
	return append(b, `]}`...)
}

// AppendFormat appends the ',"response_format":{...}' (chat) or ',"text":{"format":{...}}' (responses) member
// asking for n answers of the answer schema.
func AppendFormat(b []byte, endpoint string, answer json.RawMessage, n int) []byte {
	if endpoint == EndpointResponses {
		b = append(b, `,"text":{"format":{"type":"json_schema","name":"`+SchemaName+`","strict":true,"schema":`...)
		b = append(b, Schema(answer, n)...)
		return append(b, `}}`...)
	}
	b = append(b, `,"response_format":{"type":"json_schema","json_schema":{"name":"`+SchemaName+`","strict":true,"schema":`...)
	b = append(b, Schema(answer, n)...)
	return append(b, `}}`...)
}

// HasFormat reports whether a request body already asks for a response format (a template may write its own).
func HasFormat(endpoint string, body []byte) bool {
	if endpoint == EndpointResponses {
		return jsonl.Peek(body, "text.format").Exists()
	}
	return jsonl.Peek(body, "response_format").Exists()
}

// WithFormat returns body, a compact JSON object, with the packed response format of n answers added before its
// closing brace.
func WithFormat(dst, body []byte, endpoint string, answer json.RawMessage, n int) []byte {
	body = bytes.TrimRight(body, " \n\t\r")
	dst = append(dst, body[:len(body)-1]...)
	if endpoint == EndpointResponses && jsonl.Peek(body, "text").Exists() {
		// A text member without a format (verbosity, say) would be repeated: leave the body as it is; the
		// template must then write the format itself.
		return append(dst, '}')
	}
	dst = AppendFormat(dst, endpoint, answer, n)
	return append(dst, '}')
}

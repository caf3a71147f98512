package pack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/tidwall/gjson"

	"github.com/batchctl/batchctl/jsonl"
)

// Error codes of a packed record's error row. Every one is retryable: the record is sent again in a smaller pack
// (poll --resubmit, batchctl resubmit).
const (
	// CodeMissing: the answer holds no item with the record's index (dropped, or only under an index out of range).
	CodeMissing = "packed_answer_missing"
	// CodeDuplicate: the answer holds two or more items with the record's index; none is taken.
	CodeDuplicate = "packed_answer_duplicate"
	// CodeInvalid: the record's item is not an object with an answer, or its answer fails the answer schema.
	CodeInvalid = "packed_answer_invalid"
	// CodeUnparseable: the whole answer is not a JSON object holding an answers array; every record of the
	// request gets it.
	CodeUnparseable = "packed_answer_unparseable"
	// CodeTruncated: the answer was cut at the output limit (finish_reason length, or a responses answer incomplete
	// for max_output_tokens); every record of the request gets it.
	CodeTruncated = "packed_answer_truncated"
	// CodeRefused: the model refused the request; every record of the request gets it, with the refusal.
	CodeRefused = "packed_answer_refused"
)

// CodePrefix starts every packed error code.
const CodePrefix = "packed_answer_"

// Item is one record's share of a packed answer: its answer item (the object the model wrote for it, index
// included), or an error code and message.
type Item struct {
	Answer  json.RawMessage
	Code    string
	Message string
}

// Validator checks answers against one record's answer schema.
type Validator struct{ s *jsonschema.Schema }

// NewValidator compiles an answer schema.
func NewValidator(schema []byte) (*Validator, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return nil, fmt.Errorf("answer schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("answer.json", doc); err != nil {
		return nil, fmt.Errorf("answer schema: %w", err)
	}
	s, err := c.Compile("answer.json")
	if err != nil {
		return nil, fmt.Errorf("answer schema: %w", err)
	}
	return &Validator{s: s}, nil
}

// Check returns why answer fails the schema, nil when it conforms.
func (v *Validator) Check(answer []byte) error {
	if v == nil {
		return nil
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(answer))
	if err != nil {
		return err
	}
	return v.s.Validate(doc)
}

// Content is the text a 200 answer of endpoint carries and how it ended.
type Content struct {
	Text      string
	Refusal   string
	Truncated bool
}

// ContentOf reads the answer text of a chat completion or a response body.
func ContentOf(endpoint string, body []byte) Content {
	var c Content
	if endpoint == EndpointResponses {
		st := jsonl.Peek(body, "status").Str
		c.Truncated = st == "incomplete" && jsonl.Peek(body, "incomplete_details.reason").Str == "max_output_tokens"
		var text strings.Builder
		jsonl.Peek(body, "output").ForEach(func(_, out gjson.Result) bool {
			if out.Get("type").Str != "message" {
				return true
			}
			out.Get("content").ForEach(func(_, part gjson.Result) bool {
				switch part.Get("type").Str {
				case "output_text":
					text.WriteString(part.Get("text").Str)
				case "refusal":
					c.Refusal += part.Get("refusal").Str
				}
				return true
			})
			return true
		})
		c.Text = text.String()
		return c
	}
	choice := jsonl.Peek(body, "choices.0")
	c.Text = choice.Get("message.content").Str
	c.Refusal = choice.Get("message.refusal").Str
	c.Truncated = choice.Get("finish_reason").Str == "length"
	return c
}

// Unpack splits a 200 answer of a packed request of n records into one Item per record, index i at [i-1]. A
// refusal or a cut answer fails every record as such; an answer that is not a JSON object holding an answers array
// fails every record with CodeUnparseable. Otherwise each record gets its own item, or its own error: no item
// (CodeMissing), several (CodeDuplicate), or one whose answer is absent or fails v (CodeInvalid). Items whose index
// is not an integer in 1..n belong to no record; they are named in the missing records' messages.
func Unpack(endpoint string, body []byte, n int, v *Validator) []Item {
	items := make([]Item, n)
	all := func(code, msg string) []Item {
		for i := range items {
			items[i] = Item{Code: code, Message: msg}
		}
		return items
	}
	c := ContentOf(endpoint, body)
	switch {
	case c.Refusal != "":
		return all(CodeRefused, "the model refused the packed request: "+c.Refusal)
	case c.Truncated:
		return all(CodeTruncated, "the packed answer was cut at the output limit (finish_reason length): raise the output limit or pack fewer records")
	}
	text := []byte(c.Text)
	answers := gjson.GetBytes(text, "answers")
	if !gjson.ValidBytes(text) || !gjson.ParseBytes(text).IsObject() || !answers.IsArray() {
		return all(CodeUnparseable, fmt.Sprintf("the packed answer is not a JSON object holding an answers array: %.80q", c.Text))
	}
	seen := make([]int, n)
	var stray []string
	answers.ForEach(func(_, it gjson.Result) bool {
		idx := it.Get("index")
		k, ok := indexOf(idx)
		if !ok || k < 1 || k > n {
			stray = append(stray, strings.TrimSpace(cmpOr(idx.Raw, it.Raw)))
			return true
		}
		seen[k-1]++
		if seen[k-1] > 1 {
			items[k-1] = Item{Code: CodeDuplicate, Message: fmt.Sprintf("the packed answer holds %d items with index %d: none is taken", seen[k-1], k)}
			return true
		}
		ans := it.Get("answer")
		switch {
		case !ans.Exists():
			items[k-1] = Item{Code: CodeInvalid, Message: fmt.Sprintf("item %d has no answer", k)}
		default:
			if err := v.Check([]byte(ans.Raw)); err != nil {
				items[k-1] = Item{Code: CodeInvalid, Message: fmt.Sprintf("the answer of item %d fails the answer schema: %s", k, oneLine(err))}
			} else {
				items[k-1] = Item{Answer: json.RawMessage(it.Raw)}
			}
		}
		return true
	})
	for i := range items {
		if seen[i] == 0 {
			msg := fmt.Sprintf("the packed answer holds no item with index %d", i+1)
			if len(stray) > 0 {
				msg += fmt.Sprintf(" (it holds items with indexes out of range 1..%d: %s)", n, strings.Join(slices.Compact(stray), ", "))
			}
			items[i] = Item{Code: CodeMissing, Message: msg}
		}
	}
	return items
}

// indexOf reads an item's index: an integer, written as a JSON number (2, 2.0) or a string of digits.
func indexOf(r gjson.Result) (int, bool) {
	switch r.Type {
	case gjson.Number:
		if r.Num != float64(int64(r.Num)) {
			return 0, false
		}
		return int(r.Num), true
	case gjson.String:
		k, err := strconv.Atoi(r.Str)
		return k, err == nil
	}
	return 0, false
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// Share is record i's (1-based) share of total among n records: total/n, and one more for the first total%n, so the
// shares add up to total exactly.
func Share(total int64, n, i int) int64 {
	if n <= 0 {
		return 0
	}
	s := total / int64(n)
	if int64(i) <= total%int64(n) {
		s++
	}
	return s
}

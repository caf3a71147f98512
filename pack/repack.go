package pack

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
)

// itemHeaderRE matches the header part of an item's message, as AppendItem writes it.
var itemHeaderRE = regexp.MustCompile(`^Item ([0-9]+):$`)

type part struct {
	Type string          `json:"type"`
	Text json.RawMessage `json:"text"`
}

// messagesKey is the member of a packed body that holds the messages.
func messagesKey(endpoint string) string {
	if endpoint == EndpointResponses {
		return "input"
	}
	return "messages"
}

// itemOf returns the item index and text of a message written by AppendItem; ok is false for any other message.
func itemOf(msg json.RawMessage) (index int, text json.RawMessage, ok bool) {
	var m struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(msg, &m) != nil || m.Role != "user" || len(m.Content) == 0 || m.Content[0] != '[' {
		return 0, nil, false
	}
	var parts []part
	if json.Unmarshal(m.Content, &parts) != nil || len(parts) != 2 {
		return 0, nil, false
	}
	var header string
	if json.Unmarshal(parts[0].Text, &header) != nil {
		return 0, nil, false
	}
	sub := itemHeaderRE.FindStringSubmatch(header)
	if sub == nil {
		return 0, nil, false
	}
	index, _ = strconv.Atoi(sub[1])
	return index, parts[1].Text, true
}

// Items returns the texts of a packed body's items, in index order. A body with no items (a template that words
// its prompt its own way) is an error: it cannot be split.
func Items(endpoint string, body []byte) ([]json.RawMessage, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("packed body: %w", err)
	}
	var msgs []json.RawMessage
	if err := json.Unmarshal(top[messagesKey(endpoint)], &msgs); err != nil {
		return nil, fmt.Errorf("packed body: %s: %w", messagesKey(endpoint), err)
	}
	var texts []json.RawMessage
	for _, m := range msgs {
		if i, t, ok := itemOf(m); ok {
			if i != len(texts)+1 {
				return nil, fmt.Errorf("packed body: item %d where item %d was due", i, len(texts)+1)
			}
			texts = append(texts, t)
		}
	}
	if len(texts) == 0 {
		return nil, fmt.Errorf("packed body has no \"Item <index>:\" messages to split (a template's own wording)")
	}
	return texts, nil
}

// Repack returns a packed body holding only the items of keep (1-based indexes into body's items, in the order
// given), indexed 1..len(keep) anew, and asking for that many answers of the answer schema. Everything else of the
// body (model, instructions, limits, the user's other fields) stays as it was.
func Repack(endpoint string, body []byte, keep []int, answer json.RawMessage) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("packed body: %w", err)
	}
	key := messagesKey(endpoint)
	var msgs []json.RawMessage
	if err := json.Unmarshal(top[key], &msgs); err != nil {
		return nil, fmt.Errorf("packed body: %s: %w", key, err)
	}
	var others []json.RawMessage
	var texts []json.RawMessage
	for _, m := range msgs {
		if _, t, ok := itemOf(m); ok {
			texts = append(texts, t)
		} else {
			others = append(others, m)
		}
	}
	out := []byte{'['}
	for i, m := range others {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, m...)
	}
	for i, k := range keep {
		if k < 1 || k > len(texts) {
			return nil, fmt.Errorf("packed body has %d items, not item %d", len(texts), k)
		}
		item := AppendItem(nil, endpoint, i+1, texts[k-1])
		if len(others) == 0 && i == 0 {
			item = item[1:] // no comma before the first message
		}
		out = append(out, item...)
	}
	top[key] = append(out, ']')
	format := AppendFormat(nil, endpoint, answer, len(keep))
	// format is `,"name":{...}`: its value starts after the first colon following the name.
	if endpoint == EndpointResponses {
		var text map[string]json.RawMessage
		if t, ok := top["text"]; ok {
			_ = json.Unmarshal(t, &text)
		}
		if text == nil {
			text = map[string]json.RawMessage{}
		}
		var f struct {
			Text struct {
				Format json.RawMessage `json:"format"`
			} `json:"text"`
		}
		if err := json.Unmarshal(append(append([]byte{'{'}, format[1:]...), '}'), &f); err != nil {
			return nil, err
		}
		text["format"] = f.Text.Format
		t, err := json.Marshal(text)
		if err != nil {
			return nil, err
		}
		top["text"] = t
	} else {
		var f struct {
			ResponseFormat json.RawMessage `json:"response_format"`
		}
		if err := json.Unmarshal(append(append([]byte{'{'}, format[1:]...), '}'), &f); err != nil {
			return nil, err
		}
		top["response_format"] = f.ResponseFormat
	}
	return json.Marshal(top)
}

package pack

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
)

// itemHeaderRE matches the head of an item's content part, as AppendItems writes it.
var itemHeaderRE = regexp.MustCompile(`^Item ([0-9]+):\n`)

// messagesKey is the member of a packed body that holds the messages.
func messagesKey(endpoint string) string {
	if endpoint == EndpointResponses {
		return "input"
	}
	return "messages"
}

// itemsOf returns the texts of a user message written by AppendItems, as JSON strings in index order; ok is false
// for any other message.
func itemsOf(msg json.RawMessage) (texts []json.RawMessage, ok bool) {
	var m struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(msg, &m) != nil || m.Role != "user" || len(m.Content) == 0 || m.Content[0] != '[' {
		return nil, false
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(m.Content, &parts) != nil || len(parts) == 0 {
		return nil, false
	}
	for i, p := range parts {
		sub := itemHeaderRE.FindStringSubmatch(p.Text)
		if sub == nil || sub[1] != strconv.Itoa(i+1) {
			return nil, false
		}
		t, _ := json.Marshal(p.Text[len(sub[0]):])
		texts = append(texts, t)
	}
	return texts, true
}

// split returns a packed body's members, its messages, and which message holds the items with their texts.
func split(endpoint string, body []byte) (top map[string]json.RawMessage, msgs []json.RawMessage, at int, texts []json.RawMessage, err error) {
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, nil, 0, nil, fmt.Errorf("packed body: %w", err)
	}
	if err := json.Unmarshal(top[messagesKey(endpoint)], &msgs); err != nil {
		return nil, nil, 0, nil, fmt.Errorf("packed body: %s: %w", messagesKey(endpoint), err)
	}
	for i, m := range msgs {
		if texts, ok := itemsOf(m); ok {
			return top, msgs, i, texts, nil
		}
	}
	return nil, nil, 0, nil, fmt.Errorf("packed body has no message of \"Item <index>:\" parts to split (a template's own wording)")
}

// Items returns the texts of a packed body's items (JSON strings), in index order. A body without them (a
// template that words its prompt its own way) is an error: it cannot be split.
func Items(endpoint string, body []byte) ([]json.RawMessage, error) {
	_, _, _, texts, err := split(endpoint, body)
	return texts, err
}

// Repack returns a packed body holding only the items of keep (1-based indexes into body's items, in the order
// given), indexed 1..len(keep) anew, and asking for that many answers of the answer schema. Everything else of the
// body (model, instructions, limits, the user's other fields) stays as it was.
func Repack(endpoint string, body []byte, keep []int, answer json.RawMessage) ([]byte, error) {
	top, msgs, at, texts, err := split(endpoint, body)
	if err != nil {
		return nil, err
	}
	kept := make([][]byte, len(keep))
	for i, k := range keep {
		if k < 1 || k > len(texts) {
			return nil, fmt.Errorf("packed body has %d items, not item %d", len(texts), k)
		}
		kept[i] = texts[k-1]
	}
	msgs[at] = AppendItems(nil, endpoint, kept)
	if top[messagesKey(endpoint)], err = json.Marshal(msgs); err != nil {
		return nil, err
	}
	// AppendFormat writes `,"member":{...}`: read it back as an object to take the member's value.
	var f map[string]json.RawMessage
	format := AppendFormat([]byte{'{'}, endpoint, answer, len(keep))
	if err := json.Unmarshal(append(format[:1], append(format[2:], '}')...), &f); err != nil {
		return nil, err
	}
	if endpoint == EndpointResponses {
		var text map[string]json.RawMessage
		if t, ok := top["text"]; ok {
			_ = json.Unmarshal(t, &text)
		}
		if text == nil {
			text = map[string]json.RawMessage{}
		}
		var tf map[string]json.RawMessage
		if err := json.Unmarshal(f["text"], &tf); err != nil {
			return nil, err
		}
		text["format"] = tf["format"]
		if top["text"], err = json.Marshal(text); err != nil {
			return nil, err
		}
	} else {
		top["response_format"] = f["response_format"]
	}
	return json.Marshal(top)
}

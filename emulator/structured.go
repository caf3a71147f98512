package emulator

import (
	"encoding/json"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Structured outputs: a chat completion with response_format {type: json_schema} or a response with text.format
// {type: json_schema} is answered with JSON generated from the schema, deterministically (from the request's
// prompt), so that a packed request (submit --pack) comes back as the items it asked for. Options.GarbleRate breaks
// a share of these answers in the ways a real model does: see garble.

// structuredSchema returns the JSON schema a request body asks its answer to follow; nil when it asks for none.
func structuredSchema(endpoint string, raw json.RawMessage) map[string]any {
	var b struct {
		ResponseFormat struct {
			Type       string `json:"type"`
			JSONSchema struct {
				Schema map[string]any `json:"schema"`
			} `json:"json_schema"`
		} `json:"response_format"`
		Text struct {
			Format struct {
				Type   string         `json:"type"`
				Schema map[string]any `json:"schema"`
			} `json:"format"`
		} `json:"text"`
	}
	if json.Unmarshal(raw, &b) != nil {
		return nil
	}
	switch {
	case endpoint == "/v1/chat/completions" && b.ResponseFormat.Type == "json_schema":
		return orEmpty(b.ResponseFormat.JSONSchema.Schema)
	case endpoint == "/v1/responses" && b.Text.Format.Type == "json_schema":
		return orEmpty(b.Text.Format.Schema)
	}
	return nil
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// generate builds a value that conforms to schema (the subset structured outputs use: type, properties, items,
// enum, const, minItems/maxItems, minimum/maximum, minLength/maxLength, anyOf, $ref to $defs). seed makes the
// choices; pos is the position of the enclosing array item, so that the integers of the i-th item of an array of
// objects {index: {minimum: 1}} count 1, 2, 3...
func generate(schema, root map[string]any, seed string, pos int, depth int) any {
	if depth > 16 {
		return nil
	}
	if ref, ok := schema["$ref"].(string); ok {
		if name, ok := strings.CutPrefix(ref, "#/$defs/"); ok {
			if defs, ok := root["$defs"].(map[string]any); ok {
				if s, ok := defs[name].(map[string]any); ok {
					return generate(s, root, seed, pos, depth+1)
				}
			}
		}
		return nil
	}
	if c, ok := schema["const"]; ok {
		return c
	}
	if enum, ok := schema["enum"].([]any); ok && len(enum) > 0 {
		return enum[hash64(seed, strconv.Itoa(pos))%uint64(len(enum))]
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		if alts, ok := schema[k].([]any); ok && len(alts) > 0 {
			if s, ok := alts[0].(map[string]any); ok {
				return generate(s, root, seed, pos, depth+1)
			}
		}
	}
	typ := schema["type"]
	if types, ok := typ.([]any); ok { // ["string", "null"]: the first that is not null
		typ = "null"
		for _, t := range types {
			if t != "null" {
				typ = t
				break
			}
		}
	}
	num := func(k string, def float64) float64 {
		if v, ok := schema[k].(float64); ok {
			return v
		}
		return def
	}
	switch typ {
	case "object":
		props, _ := schema["properties"].(map[string]any)
		keys := make([]string, 0, len(props))
		for k := range props {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		obj := make(map[string]any, len(keys))
		for _, k := range keys {
			if s, ok := props[k].(map[string]any); ok {
				obj[k] = generate(s, root, seed+"."+k, pos, depth+1)
			}
		}
		return obj
	case "array":
		n := int(num("minItems", 1))
		if n < 1 {
			n = min(1, int(num("maxItems", 1)))
		}
		items, _ := schema["items"].(map[string]any)
		arr := make([]any, n)
		for i := range arr {
			arr[i] = generate(items, root, seed, i, depth+1)
		}
		return arr
	case "integer":
		v := num("minimum", 0) + float64(pos)
		if m, ok := schema["maximum"].(float64); ok && v > m {
			v = m
		}
		return int64(math.Ceil(v))
	case "number":
		return num("minimum", 0) + 0.5
	case "boolean":
		return hash64(seed, strconv.Itoa(pos))%2 == 0
	case "null":
		return nil
	default: // string, or a schema without a type
		s := labels[hash64(seed, strconv.Itoa(pos))%uint64(len(labels))]
		if m := int(num("minLength", 0)); len(s) < m {
			s += strings.Repeat("x", m-len(s))
		}
		if m, ok := schema["maxLength"].(float64); ok && len(s) > int(m) {
			s = s[:int(m)]
		}
		return s
	}
}

// Garble modes, in the order garble picks them.
const (
	garbleDropItem = iota
	garbleDuplicateIndex
	garbleMalformed
	garbleTruncated
	garbleModes
)

// garble breaks a structured answer as a model sometimes does, picked by key: an array item dropped, an array item
// given twice (its index duplicated), JSON cut short (malformed, the answer otherwise complete), or the answer cut
// at the output limit (finish_reason length). It returns the answer text and whether it was cut at the limit.
func garble(v any, key string) (string, bool) {
	mode := int(mix64(hash64("garble-mode", key)) % garbleModes)
	if mode == garbleDropItem || mode == garbleDuplicateIndex {
		if obj, ok := v.(map[string]any); ok {
			keys := make([]string, 0, len(obj))
			for k := range obj {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				arr, ok := obj[k].([]any)
				if !ok || len(arr) == 0 {
					continue
				}
				i := int(mix64(hash64("garble-item", key)) % uint64(len(arr)))
				if mode == garbleDropItem {
					obj[k] = append(arr[:i:i], arr[i+1:]...)
				} else {
					obj[k] = append(arr, arr[i])
				}
				b, _ := json.Marshal(obj)
				return string(b), false
			}
		}
		mode = garbleMalformed // nothing to drop or repeat
	}
	b, _ := json.Marshal(v)
	return string(b[:len(b)/2]), mode == garbleTruncated
}

// garbling says which structured answers garble breaks: a share rate of them, picked by a hash of key.
type garbling struct {
	rate float64
	// key names the request and its batch: the seed, the batch's creation sequence and the custom_id, so that a
	// run that creates its batches in the same order garbles the same answers, and a request sent again in
	// another batch is picked anew.
	key string
}

// structuredText is the answer text of a request whose body asks for schema; cut reports an answer cut at the
// output limit (the request's own, or a garbled truncation).
func structuredText(schema map[string]any, prompt string, g garbling, limit int64) (text string, out int64, cut bool) {
	v := generate(schema, schema, prompt, 0, 0)
	if u := float64(mix64(hash64("garble", g.key))>>11) / (1 << 53); g.rate > 0 && u < g.rate {
		text, cut = garble(v, g.key)
	} else {
		b, _ := json.Marshal(v)
		text = string(b)
	}
	text, out, limited := limitText(text, limit)
	return text, out, cut || limited
}

// mix64 is splitmix64's finalizer: FNV's high bits follow little of a change at the end of a short key (custom_ids
// that differ in their last digits), and a share drawn from them would be far from the rate asked for.
func mix64(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

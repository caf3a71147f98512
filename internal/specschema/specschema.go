// Package specschema extracts, from OpenAI's OpenAPI document, the JSON schemas of the objects the emulator sends,
// so that a test can hold every emulator object to the official shapes.
//
// The OpenAPI document cannot be committed, so the schemas a test needs are extracted into a small fixture (with
// the document's version and a note of its source) that is committed instead; `go generate ./emulator` writes it
// with internal/tools/specschemas, and a test with the document at hand checks that the fixture is current.
//
// Extraction keeps the closure of Roots under $ref in JSON Schema 2020-12 ($ref to #/$defs/...), turns OpenAPI's
// `nullable: true` into a null type, drops what only documents (descriptions, examples, x- extensions, formats,
// defaults), and makes nullable the properties the live API sends as null where the document types them without null
// (LiveNulls, each with its evidence).
package specschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// EnvSpec names the environment variable holding the path of the OpenAPI document.
const EnvSpec = "OPENAI_OPENAPI_SPEC"

// DefaultSpecPath is where the OpenAPI document is looked for without EnvSpec, relative to the repository root: a
// checkout beside the repository's own.
const DefaultSpecPath = "../shared/openai-openapi.yaml"

// Roots are the component schemas the emulator's objects are checked against: the Files and Batches objects, the
// error object, and the response body of each batch endpoint it answers. Their closure under $ref is extracted.
var Roots = []string{
	"Batch", "ListBatchesResponse", "OpenAIFile", "ListFilesResponse", "DeleteFileResponse", "ErrorResponse",
	"CreateChatCompletionResponse", "CreateCompletionResponse", "Response", "CreateEmbeddingResponse",
	"CreateModerationResponse", "ImagesResponse",
}

// LiveNull is an optional property that the live API sends as null though the document types it without null.
type LiveNull struct {
	Schema   string `json:"schema"`
	Property string `json:"property"`
	// Why is the evidence.
	Why string `json:"why"`
}

// batchExample is the evidence for the Batch properties: the document's own example of a created batch
// (createBatch's response) and of the batch object send them null until the state they describe is reached.
const batchExample = "null in the document's own examples of the Batch (createBatch's response, the batch object) until reached"

// emptyListIDs is the evidence for the list cursors: an empty page has no first or last id, and the document's
// newer list schemas (ListCertificatesResponse, ListFineTuningCheckpointPermissionResponse, ...) type them string or
// null; the files and batches lists are older.
const emptyListIDs = "null on an empty page, as the document's newer list schemas type first_id and last_id"

// LiveNulls are made nullable in the extracted schemas. A property stays required where the document requires it:
// only null is added to what it may be.
var LiveNulls = []LiveNull{
	{"Batch", "errors", batchExample}, {"Batch", "output_file_id", batchExample}, {"Batch", "error_file_id", batchExample},
	{"Batch", "in_progress_at", batchExample}, {"Batch", "expires_at", batchExample}, {"Batch", "finalizing_at", batchExample},
	{"Batch", "completed_at", batchExample}, {"Batch", "failed_at", batchExample}, {"Batch", "expired_at", batchExample},
	{"Batch", "cancelling_at", batchExample}, {"Batch", "cancelled_at", batchExample},
	{"ListBatchesResponse", "first_id", emptyListIDs}, {"ListBatchesResponse", "last_id", emptyListIDs},
	{"ListFilesResponse", "first_id", emptyListIDs}, {"ListFilesResponse", "last_id", emptyListIDs},
}

// sourceNote says where the fixture comes from.
const sourceNote = "Extracted by internal/tools/specschemas (go generate ./emulator) from OpenAI's OpenAPI document " +
	"openai-openapi.yaml (github.com/openai/openai-openapi, the document the SDKs are generated from; not committed here). " +
	"Only the closure of the roots below; descriptions, examples, formats, defaults and x- extensions dropped; " +
	"OpenAPI's nullable turned into a null type; the properties in x-live-nulls made nullable."

// Fixture is the extracted document: a JSON Schema whose $defs are the extracted component schemas.
type Fixture struct {
	Schema      string         `json:"$schema"`
	Comment     string         `json:"$comment"`
	SpecTitle   string         `json:"x-spec-title"`
	SpecVersion string         `json:"x-spec-version"`
	Roots       []string       `json:"x-roots"`
	LiveNulls   []LiveNull     `json:"x-live-nulls"`
	Defs        map[string]any `json:"$defs"`
}

// Extract reads an OpenAPI document (YAML or JSON) and returns the fixture of roots, with nulls (LiveNulls for the
// committed fixture) made nullable.
func Extract(doc []byte, roots []string, nulls []LiveNull) (*Fixture, error) {
	var spec struct {
		Info struct {
			Title   string `yaml:"title"`
			Version string `yaml:"version"`
		} `yaml:"info"`
		Components struct {
			Schemas map[string]any `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(doc, &spec); err != nil {
		return nil, fmt.Errorf("parse OpenAPI document: %w", err)
	}
	all := spec.Components.Schemas
	if len(all) == 0 {
		return nil, errors.New("the OpenAPI document has no components.schemas")
	}
	f := &Fixture{
		Schema: "https://json-schema.org/draft/2020-12/schema", Comment: sourceNote,
		SpecTitle: spec.Info.Title, SpecVersion: spec.Info.Version,
		Roots: slices.Clone(roots), LiveNulls: slices.Clone(nulls), Defs: map[string]any{},
	}
	queue := slices.Clone(roots)
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if _, done := f.Defs[name]; done {
			continue
		}
		s, ok := all[name]
		if !ok {
			return nil, fmt.Errorf("the OpenAPI document has no schema %s", name)
		}
		conv, err := convert(s, name, &queue)
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		f.Defs[name] = conv
	}
	for _, ln := range f.LiveNulls {
		if err := makeNullable(f.Defs, ln); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// Marshal writes the fixture as indented JSON with a final newline; the same fixture always gives the same bytes.
func (f *Fixture) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("encode schema fixture: %w", err)
	}
	return buf.Bytes(), nil
}

// dropped are the keywords that only document.
var dropped = map[string]bool{
	"description": true, "example": true, "examples": true, "title": true, "deprecated": true, "default": true,
	"format": true, "discriminator": true, "externalDocs": true, "readOnly": true, "writeOnly": true,
}

const refPrefix = "#/components/schemas/"

// convert turns one OpenAPI schema value of the component schema self into JSON Schema 2020-12, queueing the
// schemas it refers to. The document's few draft 2019-09 self-references ($recursiveAnchor at the top of a component,
// $recursiveRef "#" inside it) become a $ref to the component.
func convert(v any, self string, queue *[]string) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, val := range v {
			switch {
			case dropped[k], strings.HasPrefix(k, "x-"), k == "nullable", k == "$recursiveAnchor":
			case k == "$recursiveRef":
				if val != "#" {
					return nil, fmt.Errorf("$recursiveRef %v: only \"#\" is understood", val)
				}
				out["$ref"] = "#/$defs/" + self
			case k == "$ref":
				ref, _ := val.(string)
				name, ok := strings.CutPrefix(ref, refPrefix)
				if !ok {
					return nil, fmt.Errorf("$ref %q is not a component schema", ref)
				}
				*queue = append(*queue, name)
				out[k] = "#/$defs/" + name
			case k == "properties" || k == "patternProperties" || k == "$defs":
				// A map of names to schemas: the names are data, not keywords to drop.
				props, ok := val.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("%s is not an object", k)
				}
				conv := make(map[string]any, len(props))
				for name, p := range props {
					c, err := convert(p, self, queue)
					if err != nil {
						return nil, fmt.Errorf("%s.%s: %w", k, name, err)
					}
					conv[name] = c
				}
				out[k] = conv
			default:
				c, err := convert(val, self, queue)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", k, err)
				}
				out[k] = c
			}
		}
		if n, _ := v["nullable"].(bool); n {
			return withNull(out), nil
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, it := range v {
			c, err := convert(it, self, queue)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[any]any:
		return nil, errors.New("a mapping with a key that is not a string")
	default:
		return v, nil
	}
}

// withNull makes a converted schema accept null too: null joins its type and its enum, or the schema becomes one
// alternative of an anyOf with null.
func withNull(s map[string]any) map[string]any {
	if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, any(nil)) {
		s["enum"] = append(slices.Clone(enum), nil)
	}
	switch t := s["type"].(type) {
	case string:
		s["type"] = []any{t, "null"}
		return s
	case []any:
		if !slices.Contains(t, any("null")) {
			s["type"] = append(slices.Clone(t), "null")
		}
		return s
	}
	return map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
}

// makeNullable lets a property of an extracted schema be null.
func makeNullable(defs map[string]any, ln LiveNull) error {
	s, ok := defs[ln.Schema].(map[string]any)
	if !ok {
		return fmt.Errorf("live null %s.%s: no such schema among the extracted", ln.Schema, ln.Property)
	}
	props, _ := s["properties"].(map[string]any)
	p, ok := props[ln.Property].(map[string]any)
	if !ok {
		return fmt.Errorf("live null %s.%s: no such property", ln.Schema, ln.Property)
	}
	props[ln.Property] = withNull(p)
	return nil
}

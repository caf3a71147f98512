package specschema

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestExtract: the closure of the roots only; $ref and $recursiveRef rewritten to $defs; nullable turned into a null
// type (and a null enum value), or an anyOf with null where there is no type; what only documents dropped, property
// names kept even when they are keywords; a live null added to a required property without unrequiring it.
func TestExtract(t *testing.T) {
	t.Parallel()
	doc := []byte(`
openapi: 3.1.0
info: {title: T, version: 9.9.9}
components:
  schemas:
    Root:
      type: object
      description: documents only
      x-oaiMeta: {name: x}
      properties:
        description: {type: string, example: kept as a property}
        mode: {type: string, enum: [a, b], nullable: true, default: a}
        child: {$ref: "#/components/schemas/Child"}
        either: {anyOf: [{type: string}, {type: integer}], nullable: true}
      required: [mode]
    Child:
      $recursiveAnchor: true
      type: object
      properties:
        next: {$recursiveRef: "#"}
    Unused: {type: string}
`)
	f, err := Extract(doc, []string{"Root"}, []LiveNull{{Schema: "Root", Property: "mode", Why: "test"}})
	require.NoError(t, err)
	require.Equal(t, "9.9.9", f.SpecVersion)
	got, err := json.Marshal(f.Defs)
	require.NoError(t, err)
	require.JSONEq(t, `{
	  "Root": {"type": "object", "required": ["mode"], "properties": {
	    "description": {"type": "string"},
	    "mode": {"type": ["string", "null"], "enum": ["a", "b", null]},
	    "child": {"$ref": "#/$defs/Child"},
	    "either": {"anyOf": [{"anyOf": [{"type": "string"}, {"type": "integer"}]}, {"type": "null"}]}}},
	  "Child": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Child"}}}
	}`, string(got))

	_, err = Extract(doc, []string{"Missing"}, nil)
	require.ErrorContains(t, err, "no schema Missing")
	_, err = Extract(doc, []string{"Root"}, []LiveNull{{Schema: "Root", Property: "nope"}})
	require.ErrorContains(t, err, "live null Root.nope: no such property")
}

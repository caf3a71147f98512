package jsonl_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// requireSameJSON is require.JSONEq for any valid JSON: numbers are compared as written (json.Number), so a number
// out of float64's range, like 2.5e700, is compared rather than failing to decode.
func requireSameJSON(t *testing.T, want, got []byte) {
	t.Helper()
	decode := func(b []byte) any {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		require.NoError(t, dec.Decode(&v), "%s", b)
		return v
	}
	require.Equal(t, decode(want), decode(got))
}

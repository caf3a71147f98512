package store_test

import (
	"context"
	"encoding/json"
	"iter"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/store"
)

func seqOf(recs ...store.PackedRecord) iter.Seq2[store.PackedRecord, error] {
	return func(yield func(store.PackedRecord, error) bool) {
		for _, r := range recs {
			if !yield(r, nil) {
				return
			}
		}
	}
}

func TestSavePackIsIdempotent(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := context.Background()
	p := store.Pack{SpoolSHA256: "abc", Endpoint: "/v1/chat/completions", Size: 2, AnswerSchema: json.RawMessage(`{"type":"string"}`)}
	recs := []store.PackedRecord{
		{PackedCustomID: "pack:a", Index: 1, CustomID: "a", Line: 1}, {PackedCustomID: "pack:a", Index: 2, CustomID: "b", Line: 2},
		{PackedCustomID: "pack:c", Index: 1, CustomID: "c", Line: 3},
	}
	require.NoError(t, s.SavePack(ctx, p, seqOf(recs...)))
	// A resumed submit saves again: nothing changes, nothing is repeated.
	require.NoError(t, s.SavePack(ctx, p, seqOf(store.PackedRecord{PackedCustomID: "pack:x", Index: 1, CustomID: "x", Line: 9})))

	got, err := s.GetPack(ctx, "abc")
	require.NoError(t, err)
	require.JSONEq(t, string(p.AnswerSchema), string(got.AnswerSchema)) // jsonb's spacing
	got.AnswerSchema = p.AnswerSchema
	require.Equal(t, &p, got)
	missing, err := s.GetPack(ctx, "other")
	require.NoError(t, err)
	require.Nil(t, missing)

	all, err := s.PackedRecords(ctx, "abc", nil)
	require.NoError(t, err)
	require.Equal(t, map[string][]store.PackedRecord{"pack:a": recs[:2], "pack:c": recs[2:]}, all)
	some, err := s.PackedRecords(ctx, "abc", []string{"pack:c", "pack:nope"})
	require.NoError(t, err)
	require.Equal(t, map[string][]store.PackedRecord{"pack:c": recs[2:]}, some)
}

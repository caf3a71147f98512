package batchapi

import (
	"encoding/json"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/batchctl/batchctl/store"
)

// Row maps the API's batch object onto the batch-ID table's row. Source, spool sha256 and lineage are left empty:
// the store keeps what the submitter recorded.
func Row(b *openai.Batch) store.Batch {
	row := store.Batch{
		BatchID:          b.ID,
		Status:           string(b.Status),
		Endpoint:         b.Endpoint,
		Model:            b.Model,
		InputFileID:      b.InputFileID,
		OutputFileID:     b.OutputFileID,
		ErrorFileID:      b.ErrorFileID,
		RequestTotal:     int(b.RequestCounts.Total),
		RequestCompleted: int(b.RequestCounts.Completed),
		RequestFailed:    int(b.RequestCounts.Failed),
		Metadata:         map[string]string(b.Metadata),
		CreatedAt:        unix(b.CreatedAt),
	}
	if b.JSON.Errors.Valid() && len(b.Errors.Data) > 0 {
		row.Errors = json.RawMessage(b.Errors.RawJSON())
	}
	if store.IsTerminal(row.Status) {
		for _, at := range []int64{b.CompletedAt, b.FailedAt, b.ExpiredAt, b.CancelledAt} {
			if at > 0 {
				t := unix(at)
				row.EndedAt = &t
				break
			}
		}
	}
	return row
}

func unix(sec int64) time.Time {
	if sec <= 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0)
}

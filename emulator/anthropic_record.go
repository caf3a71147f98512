package emulator

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// MessageBatchRecord is what the emulator knows of an Anthropic message batch, for test assertions.
type MessageBatchRecord struct {
	ID               string
	ProcessingStatus string
	// Requests is the number of requests in the batch.
	Requests int64
	// Succeeded, Errored, Canceled and Expired are the final request_counts, zero until the batch ended.
	Succeeded, Errored, Canceled, Expired int64
	// InputTokens (cached ones included) and OutputTokens sum the usage of the succeeded results.
	InputTokens, OutputTokens                        int64
	CreatedAt, ExpiresAt, EndedAt, CancelInitiatedAt time.Time
	// CustomIDs are the requests' custom_ids in input order.
	CustomIDs []string
	// RequestsPath holds one {"custom_id","params"} line per request; ResultsPath, the results once ended.
	RequestsPath, ResultsPath string
}

// MessageBatches returns every message batch not deleted, in creation order. CustomIDs are read from disk, so
// this is cheap only for the small batches of tests.
func (s *Server) MessageBatches() []MessageBatchRecord {
	s.mu.Lock()
	seq := slices.Clone(s.anthropic.seq)
	recs := make([]MessageBatchRecord, len(seq))
	for i, b := range seq {
		recs[i] = b.record()
	}
	s.mu.Unlock()
	for i := range recs {
		s.readMessageCustomIDs(&recs[i])
	}
	return recs
}

// MessageBatch returns the record of one message batch.
func (s *Server) MessageBatch(id string) (MessageBatchRecord, bool) {
	s.mu.Lock()
	b, ok := s.anthropic.batches[id]
	var rec MessageBatchRecord
	if ok {
		rec = b.record()
	}
	s.mu.Unlock()
	if ok {
		s.readMessageCustomIDs(&rec)
	}
	return rec, ok
}

// record copies the batch's state; the caller holds s.mu.
func (b *msgBatch) record() MessageBatchRecord {
	r := MessageBatchRecord{
		ID: b.ID, ProcessingStatus: b.Status, Requests: b.Requests,
		Succeeded: b.Succeeded, Errored: b.Errored, Canceled: b.Canceled, Expired: b.Expired,
		InputTokens: b.InputTokens, OutputTokens: b.OutputTokens,
		CreatedAt: b.CreatedAt, ExpiresAt: b.ExpiresAt, EndedAt: b.EndedAt, CancelInitiatedAt: b.CancelInitiated,
		RequestsPath: b.requestsPath,
	}
	if b.Status == ProcessingEnded {
		r.ResultsPath = b.resultsPath
	}
	return r
}

func (s *Server) readMessageCustomIDs(rec *MessageBatchRecord) {
	ids, err := readRequestCustomIDs(rec.RequestsPath, s.maxMessageBatchBytes())
	if err != nil {
		s.log.Error("read message batch custom_ids", "batch", rec.ID, "err", err)
	}
	rec.CustomIDs = ids
}

// readRequestCustomIDs reads the custom_ids of a message batch's requests file, in order. A file deleted in the
// meantime yields none.
func readRequestCustomIDs(path string, maxLine int64) ([]string, error) {
	f, err := os.Open(filepath.Clean(path))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open requests file: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	var (
		ids []string
		buf []byte
	)
	for {
		buf, err = readLine(br, buf[:0], maxLine)
		if errors.Is(err, io.EOF) && len(buf) == 0 {
			return ids, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return ids, fmt.Errorf("read requests file %s: %w", path, err)
		}
		var req struct {
			CustomID string `json:"custom_id"`
		}
		if err := json.Unmarshal(buf, &req); err != nil {
			return ids, fmt.Errorf("read requests file %s: %w", path, err)
		}
		ids = append(ids, req.CustomID)
	}
}

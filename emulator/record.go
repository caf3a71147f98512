package emulator

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

// route names an API call for the counters in Stats.
type route int

const (
	routeFileUpload route = iota
	routeFileList
	routeFileGet
	routeFileDelete
	routeFileContent
	routeBatchCreate
	routeBatchList
	routeBatchGet
	routeBatchCancel
)

// Stats counts what the emulator received and what it injected. Call counters include calls answered by an
// injected fault or a 401, so a test can assert how many calls a client made.
type Stats struct {
	FileUploads      int // POST /v1/files
	FileLists        int // GET /v1/files
	FileGets         int // GET /v1/files/{id}
	FileDeletes      int // DELETE /v1/files/{id}
	ContentDownloads int // GET /v1/files/{id}/content
	BatchCreates     int // POST /v1/batches
	BatchLists       int // GET /v1/batches
	BatchGets        int // GET /v1/batches/{id}
	BatchCancels     int // POST /v1/batches/{id}/cancel

	Unauthorized int // calls refused with 401

	Injected429        int // calls answered 429 by fault injection
	Injected500        int // calls answered 500 by fault injection
	InjectedResets     int // connections cut by fault injection
	TruncatedDownloads int // content downloads cut short by fault injection
	ThrottledDownloads int // content downloads slowed by DownloadBytesPerSec
	RangeDownloads     int // content downloads that resumed from a Range: bytes=N- header (206)
	LateOutputFiles    int // completed batches whose output_file_id appeared only after LateOutputFile
	FailedRequests     int // request lines answered with an injected failure
	ExpiredBatches     int // batches that ended expired
	TokenLimitFailures int // batches failed with token_limit_exceeded
	InternalFailures   int // batches failed by an internal error of the emulator (a file it could not write)
	// PeakEnqueuedTokens is, per model, the most prompt tokens enqueued at once (batches in_progress or finalizing).
	PeakEnqueuedTokens map[string]int64
	CreatesLimited     int // batch creations refused by the hourly cap (MaxBatchCreatesPerHour)
	WebhooksDelivered  int // batch events delivered to Options.WebhookURL (answered 2xx)
	WebhookFailures    int // deliveries of batch events that failed (each retry counts)

	// Anthropic counts the Message Batches API's calls and batches.
	Anthropic AnthropicStats
}

func (st *Stats) addCall(rt route) {
	switch rt {
	case routeFileUpload:
		st.FileUploads++
	case routeFileList:
		st.FileLists++
	case routeFileGet:
		st.FileGets++
	case routeFileDelete:
		st.FileDeletes++
	case routeFileContent:
		st.ContentDownloads++
	case routeBatchCreate:
		st.BatchCreates++
	case routeBatchList:
		st.BatchLists++
	case routeBatchGet:
		st.BatchGets++
	case routeBatchCancel:
		st.BatchCancels++
	default:
		st.Anthropic.addCall(rt)
	}
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.PeakEnqueuedTokens = maps.Clone(s.stats.PeakEnqueuedTokens)
	return st
}

// FileRecord is what the emulator knows of a file, including deleted ones, for test assertions.
type FileRecord struct {
	ID        string
	Filename  string
	Purpose   string
	Bytes     int64
	CreatedAt int64
	ExpiresAt int64 // 0 when the file never expires
	Deleted   bool
	// Path is the body on disk; empty once the file is deleted.
	Path string
}

// BatchRecord is what the emulator knows of a batch, for test assertions.
type BatchRecord struct {
	ID           string
	Status       string
	Endpoint     string
	Model        string // empty until validation read the input file
	InputFileID  string
	OutputFileID string
	ErrorFileID  string
	Metadata     map[string]string
	CreatedAt    int64
	// Total, Completed and Failed are the batch's request_counts.
	Total, Completed, Failed int64
	// InputTokens and OutputTokens are the batch's usage.
	InputTokens, OutputTokens int64
	// ErrorCodes are the codes of errors.data, in order (validation failures, token_limit_exceeded).
	ErrorCodes []string
	// CustomIDs are the custom_ids of the input file's lines in input order, read when validation passed the
	// line (nil before validation and for lines that failed to parse).
	CustomIDs []string
}

// Files returns every file the emulator has held, uploads and generated outputs, in creation order.
func (s *Server) Files() []FileRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]FileRecord, 0, len(s.fileSeq))
	for _, f := range s.fileSeq {
		out = append(out, f.record())
	}
	return out
}

// File returns the record of one file.
func (s *Server) File(id string) (FileRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.files[id]
	if !ok {
		return FileRecord{}, false
	}
	return f.record(), true
}

func (f *fileMeta) record() FileRecord {
	r := FileRecord{
		ID: f.ID, Filename: f.Filename, Purpose: f.Purpose, Bytes: f.Bytes,
		CreatedAt: f.CreatedAt, ExpiresAt: f.ExpiresAt, Deleted: f.Deleted,
	}
	if !f.Deleted {
		r.Path = f.path
	}
	return r
}

// Batches returns every batch in creation order. CustomIDs are read from disk, so this is cheap only for the
// small batches of tests.
func (s *Server) Batches() []BatchRecord {
	s.mu.Lock()
	seq := slices.Clone(s.batchSeq)
	recs := make([]BatchRecord, len(seq))
	for i, b := range seq {
		recs[i] = b.record()
	}
	s.mu.Unlock()
	for i, b := range seq {
		ids, err := readCustomIDs(b.idsPath)
		if err != nil {
			s.log.Error("read custom_ids", "batch", b.ID, "err", err)
		}
		recs[i].CustomIDs = ids
	}
	return recs
}

// Batch returns the record of one batch.
func (s *Server) Batch(id string) (BatchRecord, bool) {
	s.mu.Lock()
	b, ok := s.batches[id]
	var rec BatchRecord
	if ok {
		rec = b.record()
	}
	s.mu.Unlock()
	if !ok {
		return BatchRecord{}, false
	}
	ids, err := readCustomIDs(b.idsPath)
	if err != nil {
		s.log.Error("read custom_ids", "batch", id, "err", err)
	}
	rec.CustomIDs = ids
	return rec, true
}

// record copies the batch's state; the caller holds s.mu.
func (b *batch) record() BatchRecord {
	r := BatchRecord{
		ID: b.ID, Status: b.Status, Endpoint: b.Endpoint, Model: b.Model, InputFileID: b.InputFileID,
		OutputFileID: b.OutputFileID, ErrorFileID: b.ErrorFileID, CreatedAt: b.CreatedAt,
		Total: b.Total, Completed: b.Completed, Failed: b.Failed,
		InputTokens: b.InputTokens, OutputTokens: b.OutputTokens,
	}
	if b.Metadata != nil {
		r.Metadata = make(map[string]string, len(b.Metadata))
		for k, v := range b.Metadata {
			r.Metadata[k] = v
		}
	}
	for _, e := range b.Errors {
		r.ErrorCodes = append(r.ErrorCodes, e.Code)
	}
	return r
}

// readCustomIDs reads the side file where validation wrote one custom_id per line (JSON-quoted, so any string
// survives). A missing file means validation has not run.
func readCustomIDs(path string) ([]string, error) {
	f, err := os.Open(filepath.Clean(path))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open custom_id list: %w", err)
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var id string
		if err := json.Unmarshal(sc.Bytes(), &id); err != nil {
			return ids, fmt.Errorf("read custom_id list %s: %w", path, err)
		}
		ids = append(ids, id)
	}
	if err := sc.Err(); err != nil {
		return ids, fmt.Errorf("read custom_id list %s: %w", path, err)
	}
	return ids, nil
}

package emulator

import (
	"fmt"
	"net/http"
	"os"
)

// handleMsgBatchResults streams an ended batch's results file, with Range resumption and the download faults
// (truncation, throttling) of the OpenAI file content route.
func (s *Server) handleMsgBatchResults(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	b, ok := s.anthropic.batches[id]
	var status, path string
	if ok {
		status, path = b.Status, b.resultsPath
	}
	s.mu.Unlock()
	switch {
	case !ok:
		writeMsgBatchNotFound(w, id)
		return
	case status != ProcessingEnded:
		writeAnthropicError(w, http.StatusBadRequest, anthropicInvalidRequest,
			fmt.Sprintf("Message batch %s has not ended yet; its results are available once processing_status is ended.", id))
		return
	}
	f, err := os.Open(path) //nolint:gosec // a path the emulator made under its data dir
	if err != nil {
		// Deleted between the lookup and the open.
		writeMsgBatchNotFound(w, id)
		return
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		s.log.Error("stat message batch results", "batch", id, "err", err)
		writeAnthropicError(w, http.StatusInternalServerError, anthropicAPIError, "Internal server error")
		return
	}
	if err := s.serveContent(w, r, f, info.Size(), "application/x-jsonl"); err != nil {
		s.log.Debug("results download interrupted", "batch", id, "err", err)
	}
}

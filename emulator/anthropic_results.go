package emulator

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
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
	size := info.Size()

	// A Range of the form bytes=N- is honoured with 206 and the rest of the body; any other Range, or one past
	// the end, is answered whole.
	start, code := int64(0), http.StatusOK
	if n, ok := rangeStart(r.Header.Get("Range")); ok && n < size {
		if _, err := f.Seek(n, io.SeekStart); err == nil {
			start, code = n, http.StatusPartialContent
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, size-1, size))
			s.count(func(st *Stats) { st.RangeDownloads++ })
		}
	}
	length := size - start

	faults := s.Faults()
	var body io.Reader = f
	if faults.TruncateDownloadRate > 0 && length > 1 && s.chance(faults.TruncateDownloadRate) {
		s.count(func(st *Stats) { st.TruncatedDownloads++ })
		// Send between a tenth and nine tenths of the body; Content-Length still announces all of it.
		cut := length/10 + s.int64n(length*8/10+1)
		body = io.LimitReader(f, max(cut, 1))
	}
	w.Header().Set("Content-Type", "application/x-jsonl")
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(code)
	if faults.DownloadBytesPerSec > 0 {
		s.count(func(st *Stats) { st.ThrottledDownloads++ })
		err = copyThrottled(r.Context(), w, body, faults.DownloadBytesPerSec)
	} else {
		_, err = io.Copy(w, body)
	}
	if err != nil {
		s.log.Debug("results download interrupted", "batch", id, "err", err)
	}
}

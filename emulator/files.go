package emulator

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// fileMeta is a stored file; the body lives at path. Guarded by Server.mu once registered.
type fileMeta struct {
	ID        string
	Filename  string
	Purpose   string
	Bytes     int64
	CreatedAt int64
	ExpiresAt int64
	Deleted   bool
	path      string
}

// fileObject is the OpenAIFile schema.
type fileObject struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	ExpiresAt *int64 `json:"expires_at,omitempty"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
}

func (f *fileMeta) object() fileObject {
	o := fileObject{
		ID: f.ID, Object: "file", Bytes: f.Bytes, CreatedAt: f.CreatedAt,
		Filename: f.Filename, Purpose: f.Purpose, Status: "processed",
	}
	if f.ExpiresAt != 0 {
		exp := f.ExpiresAt
		o.ExpiresAt = &exp
	}
	return o
}

// Upload purposes the real service accepts (CreateFileRequest.purpose).
var uploadPurposes = map[string]bool{
	"assistants": true, "batch": true, "fine-tune": true, "vision": true, "user_data": true, "evals": true,
}

const (
	// defaultBatchFileTTL is how long files with purpose batch and batch_output live by default (30 days).
	defaultBatchFileTTL = 30 * 24 * time.Hour
	minExpiresAfter     = 3600
	maxExpiresAfter     = 2_592_000
	maxFormFieldBytes   = 4 << 10
)

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// handleFileUpload streams the multipart body: the file part goes straight to disk, never into memory.
func (s *Server) handleFileUpload(w http.ResponseWriter, r *http.Request) {
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/form-data" || params["boundary"] == "" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "",
			"Invalid Content-Type header: expected multipart/form-data with a boundary.", "")
		return
	}
	maxUpload := s.opts.MaxUploadBytes
	mr := multipart.NewReader(http.MaxBytesReader(w, r.Body, maxUpload+1<<20), params["boundary"])

	id := newID("file-")
	tmpPath := filepath.Join(s.dataDir, "tmp", id+".upload")
	defer os.Remove(tmpPath) //nolint:errcheck // gone after the rename on success

	var (
		purpose, filename, anchor, seconds string
		size                               int64
		gotFile                            bool
	)
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "",
				fmt.Sprintf("Could not parse multipart form: %v", err), "")
			return
		}
		switch name := part.FormName(); name {
		case "file":
			filename = part.FileName()
			size, err = s.saveUpload(tmpPath, part, maxUpload)
			if errors.Is(err, errTooLarge) {
				writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "file_too_large",
					fmt.Sprintf("File is too large: the maximum is %d bytes.", maxUpload), "file")
				return
			}
			if err != nil {
				s.log.Error("store upload", "err", err)
				writeError(w, http.StatusInternalServerError, "server_error", "", "The server had an error while processing your request.", "")
				return
			}
			gotFile = true
		case "purpose":
			purpose, err = readField(part)
		case "expires_after[anchor]", "expires_after.anchor":
			anchor, err = readField(part)
		case "expires_after[seconds]", "expires_after.seconds":
			seconds, err = readField(part)
		default:
			_, err = io.Copy(io.Discard, io.LimitReader(part, maxFormFieldBytes))
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "", fmt.Sprintf("Could not parse multipart form: %v", err), "")
			return
		}
	}
	switch {
	case !gotFile:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "Missing required parameter: 'file'.", "file")
		return
	case purpose == "":
		writeError(w, http.StatusBadRequest, "invalid_request_error", "", "Missing required parameter: 'purpose'.", "purpose")
		return
	case !uploadPurposes[purpose]:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "",
			fmt.Sprintf("'%s' is not one of ['fine-tune', 'assistants', 'batch', 'user_data', 'vision', 'evals'] - 'purpose'", purpose), "purpose")
		return
	case purpose == "batch" && !strings.HasSuffix(strings.ToLower(filename), ".jsonl"):
		writeError(w, http.StatusBadRequest, "invalid_request_error", "",
			fmt.Sprintf("Invalid file format for Batch API. Must be .jsonl (got %q).", filename), "file")
		return
	}
	created := s.now()
	var expiresAt int64
	if purpose == "batch" && !isAzure(r) { // Azure's input files have no default expiry
		expiresAt = created.Add(defaultBatchFileTTL).Unix()
	}
	if anchor != "" || seconds != "" {
		lo, hi := int64(minExpiresAfter), int64(maxExpiresAfter)
		if isAzure(r) {
			lo, hi = azureMinExpiresAfter, azureMaxExpiresAfter
		}
		secs, err := strconv.ParseInt(seconds, 10, 64)
		if anchor != "created_at" || err != nil || secs < lo || secs > hi {
			writeError(w, http.StatusBadRequest, "invalid_request_error", "", fmt.Sprintf(
				"Invalid 'expires_after': anchor must be 'created_at' and seconds between %d and %d.", lo, hi), "expires_after")
			return
		}
		expiresAt = created.Unix() + secs
	}
	meta := &fileMeta{
		ID: id, Filename: filename, Purpose: purpose, Bytes: size,
		CreatedAt: created.Unix(), ExpiresAt: expiresAt, path: filepath.Join(s.dataDir, "files", id),
	}
	if err := os.Rename(tmpPath, meta.path); err != nil {
		s.log.Error("store upload", "file", id, "err", err)
		writeError(w, http.StatusInternalServerError, "server_error", "", "The server had an error while processing your request.", "")
		return
	}
	s.addFile(meta)
	writeJSON(w, http.StatusOK, meta.object())
}

var errTooLarge = errors.New("file too large")

// saveUpload copies one multipart part to path, refusing more than limit bytes.
func (s *Server) saveUpload(path string, part io.Reader, limit int64) (int64, error) {
	f, err := os.Create(filepath.Clean(path))
	if err != nil {
		return 0, fmt.Errorf("create upload file: %w", err)
	}
	n, err := io.Copy(f, io.LimitReader(part, limit+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return n, errTooLarge
		}
		return n, fmt.Errorf("write upload file %s: %w", path, err)
	}
	if n > limit {
		return n, errTooLarge
	}
	return n, nil
}

func readField(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxFormFieldBytes))
	if err != nil {
		return "", fmt.Errorf("read form field: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (s *Server) addFile(f *fileMeta) {
	s.mu.Lock()
	s.files[f.ID] = f
	s.fileSeq = append(s.fileSeq, f)
	s.mu.Unlock()
}

// lookupFile returns a copy of a live file's metadata: not deleted, and not expired.
func (s *Server) lookupFile(id string) (fileMeta, error) {
	now := s.now().Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.files[id]
	if !ok || !f.live(now) {
		return fileMeta{}, errNotFound
	}
	return *f, nil
}

// fileExists reports whether the API holds a live file of that id.
func (s *Server) fileExists(id string) bool {
	_, err := s.lookupFile(id)
	return err == nil
}

// live reports whether the file is there at unix time now: not deleted, and not past its expires_at (as the API,
// which answers 404 for an expired file on retrieve and content, and lists it no more).
func (f *fileMeta) live(now int64) bool {
	return !f.Deleted && (f.ExpiresAt == 0 || now < f.ExpiresAt)
}

func writeFileNotFound(w http.ResponseWriter, id string) {
	writeError(w, http.StatusNotFound, "invalid_request_error", "", fmt.Sprintf("No such File object: %s", id), "id")
}

func (s *Server) handleFileGet(w http.ResponseWriter, r *http.Request) {
	f, err := s.lookupFile(r.PathValue("id"))
	if err != nil {
		writeFileNotFound(w, r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, f.object())
}

// fileList is the ListFilesResponse schema.
type fileList struct {
	Object  string       `json:"object"`
	Data    []fileObject `json:"data"`
	FirstID *string      `json:"first_id"`
	LastID  *string      `json:"last_id"`
	HasMore bool         `json:"has_more"`
}

func (s *Server) handleFileList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, ok := parseLimit(w, q.Get("limit"), 10_000, 10_000)
	if !ok {
		return
	}
	order := q.Get("order")
	if order == "" {
		order = "desc"
	}
	if order != "asc" && order != "desc" {
		writeError(w, http.StatusBadRequest, "invalid_request_error", "",
			fmt.Sprintf("Invalid 'order': expected 'asc' or 'desc', got '%s'.", order), "order")
		return
	}
	purpose, after := q.Get("purpose"), q.Get("after")

	s.mu.Lock()
	live := make([]*fileMeta, 0, len(s.fileSeq))
	now := s.now().Unix()
	for _, f := range s.fileSeq {
		if f.live(now) && (purpose == "" || f.Purpose == purpose) {
			live = append(live, f)
		}
	}
	if order == "desc" {
		for i, j := 0, len(live)-1; i < j; i, j = i+1, j-1 {
			live[i], live[j] = live[j], live[i]
		}
	}
	start := 0
	if after != "" {
		start = len(live)
		for i, f := range live {
			if f.ID == after {
				start = i + 1
				break
			}
		}
	}
	page := live[start:]
	hasMore := len(page) > limit
	if hasMore {
		page = page[:limit]
	}
	resp := fileList{Object: "list", Data: make([]fileObject, 0, len(page)), HasMore: hasMore}
	for _, f := range page {
		resp.Data = append(resp.Data, f.object())
	}
	s.mu.Unlock()
	if len(resp.Data) > 0 {
		resp.FirstID, resp.LastID = &resp.Data[0].ID, &resp.Data[len(resp.Data)-1].ID
	}
	writeJSON(w, http.StatusOK, resp)
}

// parseLimit parses a list limit between 1 and maxLimit; it writes the 400 itself.
func parseLimit(w http.ResponseWriter, raw string, def, maxLimit int) (int, bool) {
	if raw == "" {
		return def, true
	}
	n, err := strconv.Atoi(raw)
	switch {
	case err != nil:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "invalid_type",
			fmt.Sprintf("Invalid 'limit': expected an integer, but got '%s' instead.", raw), "limit")
		return 0, false
	case n < 1:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "integer_below_min_value",
			fmt.Sprintf("Invalid 'limit': integer below minimum value. Expected a value >= 1, but got %d instead.", n), "limit")
		return 0, false
	case n > maxLimit:
		writeError(w, http.StatusBadRequest, "invalid_request_error", "integer_above_max_value",
			fmt.Sprintf("Invalid 'limit': integer above maximum value. Expected a value <= %d, but got %d instead.", maxLimit, n), "limit")
		return 0, false
	}
	return n, true
}

// deleteResponse is the DeleteFileResponse schema.
type deleteResponse struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}

func (s *Server) handleFileDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	now := s.now().Unix()
	s.mu.Lock()
	f, ok := s.files[id]
	if !ok || !f.live(now) {
		s.mu.Unlock()
		writeFileNotFound(w, id)
		return
	}
	f.Deleted = true
	path := f.path
	s.mu.Unlock()
	// A download in flight keeps its open descriptor; the unlink does not disturb it.
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		s.log.Error("delete file body", "file", id, "err", err)
	}
	writeJSON(w, http.StatusOK, deleteResponse{ID: id, Object: "file", Deleted: true})
}

// handleFileContent streams a file body, with the throttling and truncation faults applied.
func (s *Server) handleFileContent(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	meta, err := s.lookupFile(id)
	if err != nil {
		writeFileNotFound(w, id)
		return
	}
	f, err := os.Open(meta.path)
	if err != nil {
		// Deleted between the lookup and the open.
		writeFileNotFound(w, id)
		return
	}
	defer f.Close()

	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", meta.Filename))
	if err := s.serveContent(w, r, f, meta.Bytes, "application/octet-stream"); err != nil {
		s.log.Debug("download interrupted", "file", id, "err", err)
	}
}

// serveContent sends the body of f, size bytes, as a file download of every provider: a Range of the form bytes=N-
// (what a download that was cut asks to resume with) is honoured with 206 and the rest of the body, any other
// Range, or one past the end, is answered whole, as a server may; the truncation and throttling faults apply. Its
// error is the copy's: the client went away, or the fault cut the body.
func (s *Server) serveContent(w http.ResponseWriter, r *http.Request, f *os.File, size int64, contentType string) error {
	start, status := int64(0), http.StatusOK
	if n, ok := rangeStart(r.Header.Get("Range")); ok && n < size {
		if _, err := f.Seek(n, io.SeekStart); err == nil {
			start, status = n, http.StatusPartialContent
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
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("Content-Length", strconv.FormatInt(length, 10))
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return nil
	}
	if faults.DownloadBytesPerSec > 0 {
		s.count(func(st *Stats) { st.ThrottledDownloads++ })
		return copyThrottled(r.Context(), w, body, faults.DownloadBytesPerSec)
	}
	_, err := io.Copy(w, body)
	return err
}

// rangeStart parses a Range header of the form "bytes=N-" (N ≥ 0).
func rangeStart(h string) (int64, bool) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return 0, false
	}
	from, ok := strings.CutSuffix(spec, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(from, 10, 64)
	return n, err == nil && n >= 0
}

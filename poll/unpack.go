package poll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/tidwall/gjson"

	"github.com/batchctl/batchctl/batchapi"
	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/pack"
	"github.com/batchctl/batchctl/store"
)

// packedSource is what a load needs to unpack a batch of packed requests (submit --pack): where to look up the
// records of its packed requests, and the answer schema the records' answers are held to.
type packedSource struct {
	ctx      context.Context
	store    *store.Store
	sha      string
	endpoint string
	v        *pack.Validator
}

// fetch looks up the records of the packed requests ids.
func (ps *packedSource) fetch(ids []string) (map[string][]store.PackedRecord, error) {
	return ps.store.PackedRecords(ps.ctx, ps.sha, ids)
}

// packedSourceOf reads the packing of a batch whose metadata says its requests are packed; nil for any other.
func (d *Daemon) packedSourceOf(ctx context.Context, row store.Batch, log *slog.Logger) (*packedSource, error) {
	if row.Metadata[batchapi.MetaPack] == "" {
		return nil, nil
	}
	p, err := d.store.GetPack(ctx, row.SpoolSHA256)
	if err != nil {
		return nil, err
	}
	if p == nil {
		// Not recorded (a submit without the database): the packed requests load as they are, one row each.
		log.Error("batch of packed requests without its record-to-index map in the database; loading one row per request, not per record",
			"spool_sha256", row.SpoolSHA256)
		return nil, nil
	}
	ps := &packedSource{ctx: ctx, store: d.store, sha: row.SpoolSHA256, endpoint: p.Endpoint}
	if ps.v, err = pack.NewValidator(p.AnswerSchema); err != nil {
		log.Warn("the answer schema of the packed requests does not compile; answers are not checked against it", "error", err)
	}
	return ps, nil
}

// unpackLine turns one output line of a packed request into one row per record, appended to rows: the record's
// own answer item, with its share of the request's usage, or the record's own error. It returns the rows and how
// many records got a packed_answer_* error.
func (ps *packedSource) unpackLine(rows []store.Result, batchID string, ol *jsonl.OutputLine, recs []store.PackedRecord, s *fileSource) ([]store.Result, int, error) {
	failed := 0
	base := store.Result{BatchID: batchID, PackedCustomID: ol.CustomID}
	switch {
	case ol.Error != nil:
		errJSON, err := json.Marshal(ol.Error)
		if err != nil {
			return rows, 0, err
		}
		base.Error = errJSON
		s.outcomes[ol.Error.Code] += len(recs)
		for _, r := range recs {
			rows = append(rows, ps.row(base, r))
		}
		return rows, 0, nil
	case ol.Response == nil:
		return rows, 0, nil
	}
	code := ol.Response.StatusCode
	body := ol.Response.Body
	s.usage.add(body)
	if code/100 != 2 {
		// The request failed as a whole: every record has the request's answer.
		base.StatusCode, base.Response = &code, append(json.RawMessage(nil), body...)
		s.outcomes["http_"+strconv.Itoa(code)] += len(recs)
		for _, r := range recs {
			rows = append(rows, ps.row(base, r))
		}
		return rows, 0, nil
	}
	items := pack.Unpack(ps.endpoint, body, len(recs), ps.v)
	usage := jsonl.Peek(body, "usage")
	for i, r := range recs {
		row := ps.row(base, r)
		it := items[i]
		if it.Code != "" {
			row.Error, _ = json.Marshal(map[string]string{"code": it.Code, "message": it.Message})
			s.outcomes[it.Code]++
			failed++
		} else {
			ok := code
			row.StatusCode = &ok
			row.Response = recordResponse(r.Index, it.Answer, usage, len(recs))
			s.outcomes["ok"]++
		}
		rows = append(rows, row)
	}
	return rows, failed, nil
}

func (ps *packedSource) row(base store.Result, r store.PackedRecord) store.Result {
	line := r.Line
	base.CustomID, base.InputLine = r.CustomID, &line
	return base
}

// recordResponse is a record's response: its answer item {"index", "answer"} and its share of the request's usage
// (each count of the usage object, and of its details objects, divided among the n records so that the shares add
// up to the request's).
func recordResponse(index int, item json.RawMessage, usage gjson.Result, n int) json.RawMessage {
	b := []byte(`{"index":`)
	b = strconv.AppendInt(b, int64(index), 10)
	b = append(b, `,"answer":`...)
	b = append(b, gjson.GetBytes(item, "answer").Raw...)
	if usage.IsObject() {
		b = append(b, `,"usage":`...)
		b = appendShare(b, usage, n, index)
	}
	return append(b, '}')
}

func appendShare(b []byte, obj gjson.Result, n, i int) []byte {
	b = append(b, '{')
	first := true
	obj.ForEach(func(k, v gjson.Result) bool {
		var val []byte
		switch {
		case v.Type == gjson.Number && v.Num == float64(int64(v.Num)):
			val = strconv.AppendInt(nil, pack.Share(v.Int(), n, i), 10)
		case v.IsObject():
			val = appendShare(nil, v, n, i)
		default:
			return true
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, k.Raw...)
		b = append(b, ':')
		b = append(b, val...)
		return true
	})
	return append(b, '}')
}

// packedChunk is how many output lines of a packed batch a load reads before it looks their records up, in one
// query: the load holds a chunk's lines and records, never the whole batch's map.
const packedChunk = 500

// nextPacked is Next for a batch of packed requests: the rows of the records of each line, in turn.
func (s *fileSource) nextPacked() bool {
	for s.qi >= len(s.queue) {
		if s.eof || !s.fillPacked() {
			return false
		}
	}
	s.cur = s.queue[s.qi]
	s.qi++
	return true
}

// fillPacked reads the next chunk of lines and queues their rows; false on error (s.err).
func (s *fileSource) fillPacked() bool {
	s.queue, s.qi, s.chunk = s.queue[:0], 0, s.chunk[:0]
	ids := make([]string, 0, packedChunk)
	for len(s.chunk) < packedChunk {
		ol, err := s.dec.Next()
		if errors.Is(err, io.EOF) {
			s.eof = true
			break
		}
		if err != nil {
			s.err = err
			return false
		}
		s.c.lines++
		l := jsonl.OutputLine{ID: ol.ID, CustomID: ol.CustomID}
		if ol.Response != nil { // the body aliases the decoder's buffer
			l.Response = &jsonl.Response{StatusCode: ol.Response.StatusCode, RequestID: ol.Response.RequestID,
				Body: append(json.RawMessage(nil), ol.Response.Body...)}
		}
		if ol.Error != nil {
			e := *ol.Error
			l.Error = &e
		}
		if l.Response == nil && l.Error == nil {
			s.err = fmt.Errorf("line %d: neither a response nor an error", s.dec.Line())
			return false
		}
		s.chunk = append(s.chunk, l)
		ids = append(ids, l.CustomID)
	}
	if len(s.chunk) == 0 {
		return true
	}
	recs, err := s.pk.fetch(ids)
	if err != nil {
		s.err = err
		return false
	}
	for i := range s.chunk {
		ol := &s.chunk[i]
		rs, ok := recs[ol.CustomID]
		if !ok {
			// A request the map does not know (the batch was packed by hand?): its row as it came, without a line.
			rs = []store.PackedRecord{{CustomID: ol.CustomID, Index: 1}}
		}
		var failed int
		if s.queue, failed, s.err = s.pk.unpackLine(s.queue, s.batchID, ol, rs, s); s.err != nil {
			return false
		}
		s.c.packedFailed += int64(failed)
	}
	return true
}

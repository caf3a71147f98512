package submit

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/tidwall/gjson"

	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/pack"
)

// packMember is one record of a packed request: its custom_id and its line in its input.
type packMember struct {
	customID string
	num      int
}

// packer collects the records of one packed request (Options.Pack) until it is full or its input ends.
type packer struct {
	form    pack.Form
	members []packMember
	texts   []byte   // the built-in form's texts (JSON values), one after the other
	ends    []int    // where each text ends in texts
	records []any    // the template's records, decoded
	name    string   // the input of the members
	views   [][]byte // texts cut at ends, for the form
}

// A --template renders a packed request from a map: .records, the list of the request's records, each a map of
// .index (1..N) and .record (the data record); .n, N; and .schema, the packed answer's JSON schema for these N
// records as JSON text. The request asks for the packed answer format unless the template writes a response_format
// (chat) or text.format (responses) of its own: then it must ask for .schema's shape itself.

func (p *packer) reset() {
	p.members, p.texts, p.ends, p.records, p.name = p.members[:0], p.texts[:0], p.ends[:0], p.records[:0], ""
}

// addPacked takes one input line into the open pack. The error is the reason the line is bad; the pack is then as
// it was.
func (b *builder) addPacked(name string, num int, line []byte) error {
	p := b.pk
	var id string
	if b.opts.Format == FormatText {
		id = generatedID(name, num)
		if b.tmpl != nil {
			p.records = append(p.records, map[string]any{"text": string(line)})
		} else {
			p.texts = jsonl.AppendString(p.texts, string(line))
		}
	} else {
		if err := jsonl.Inspect(line, &b.rec); err != nil {
			return err
		}
		if b.rec.IsRequest {
			return fmt.Errorf("a request line cannot be packed: --pack builds requests from data records")
		}
		var err error
		if id, err = b.customID(name, num, line); err != nil {
			return err
		}
		if b.tmpl != nil {
			var rec any
			d := json.NewDecoder(bytes.NewReader(line))
			d.UseNumber()
			if err := d.Decode(&rec); err != nil {
				return fmt.Errorf("decode record: %w", err)
			}
			p.records = append(p.records, rec)
		} else {
			if b.opts.Model == "" {
				return fmt.Errorf("not a request line (it has no custom_id and body), and there is no --model or --template to build one")
			}
			v := jsonl.Peek(line, b.textPath)
			switch {
			case !v.Exists():
				return fmt.Errorf("field %q is missing", b.opts.TextField)
			case v.Type != gjson.String:
				return fmt.Errorf("field %q is %s, want a string", b.opts.TextField, v.Raw)
			}
			p.texts = append(p.texts, rawBytes(line, v)...)
		}
	}
	if len(p.members) == 0 {
		p.name = name
	}
	p.ends = append(p.ends, len(p.texts))
	p.members = append(p.members, packMember{customID: id, num: num})
	return nil
}

// packFull reports whether the open pack holds Options.Pack records.
func (b *builder) packFull() bool { return len(b.pk.members) >= b.opts.Pack }

// packPending reports whether the open pack holds any record.
func (b *builder) packPending() bool { return len(b.pk.members) > 0 }

// buildPacked turns the open pack into req, whose members are the pack's records, and empties the pack. The
// packed request's custom_id is "pack:" and its first record's: unique in a batch, since the records' are.
func (b *builder) buildPacked(req *request) error {
	p := b.pk
	defer p.reset()
	*req = request{customID: "pack:" + p.members[0].customID}
	req.members = append([]packMember(nil), p.members...)
	var body []byte
	if b.tmpl != nil {
		items := make([]map[string]any, len(p.records))
		for i, r := range p.records {
			items[i] = map[string]any{"index": i + 1, "record": r}
		}
		data := map[string]any{"records": items, "n": len(items), "schema": string(pack.Schema(b.opts.AnswerSchema, len(items)))}
		b.out.Reset()
		if err := b.tmpl.Execute(&b.out, data); err != nil {
			return err
		}
		rendered, err := CompactBody(b.out.Bytes())
		if err != nil {
			return err
		}
		if pack.HasFormat(b.opts.Endpoint, rendered) {
			body = rendered
		} else {
			b.bodyBuf = pack.WithFormat(b.bodyBuf[:0], rendered, b.opts.Endpoint, b.opts.AnswerSchema, len(p.records))
			body = b.bodyBuf
		}
	} else {
		p.views = p.views[:0]
		start := 0
		for _, end := range p.ends {
			p.views = append(p.views, p.texts[start:end])
			start = end
		}
		b.bodyBuf = p.form.AppendBody(b.bodyBuf[:0], p.views)
		body = b.bodyBuf
	}
	b.writeLine(&jsonl.Request{CustomID: req.customID, Method: "POST", URL: b.opts.wireURL(), Body: body}, req)
	return b.describe(body, req)
}

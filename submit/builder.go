package submit

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/template"

	"github.com/tidwall/gjson"

	"github.com/batchctl/batchctl/jsonl"
	"github.com/batchctl/batchctl/pack"
	"github.com/batchctl/batchctl/provider"
)

// request is one request line ready for a batch file, with what cutting and checking need to know of it.
type request struct {
	line     []byte // the request line without newline; valid until the next build
	customID string
	model    string
	inputs   int   // embedding inputs; 0 for other endpoints
	tokens   int64 // EstimateTokens of the body; 0 unless Options.MaxTokens or EstimateTokens is set
	// outTokens bounds the request's output tokens, for the cost estimate (Options.Prices): its max_tokens,
	// max_completion_tokens or max_output_tokens, else DefaultOutputTokens; 0 for endpoints that answer no tokens.
	outTokens int64
	// members are the records of a packed request (Options.Pack), index i+1 at [i]; nil for an unpacked one.
	members []packMember
	// bodyOff and bodyLen locate the body in line: the spooler's goroutine estimates tokens and outTokens from it
	// (Options.estimate).
	bodyOff, bodyLen int
}

// builder turns input lines into request lines: request lines pass through (checked), data records go through the
// template or the built-in form of the endpoint.
type builder struct {
	opts    *Options
	tmpl    *template.Template
	rec     jsonl.Record
	buf     []byte // the request line
	bodyBuf []byte // a built-in body
	textBuf []byte // a text line as a JSON string
	imgBuf  []byte // an edit's images[]
	out     bytes.Buffer

	idPath, textPath, imagePath string  // --id-field, --text-field and --image-field as gjson paths, escaped once
	model                       string  // the last model seen, shared by the requests that name it
	pk                          *packer // the open pack, with Options.Pack
}

// TemplateFuncs are the functions a --template may call besides text/template's own: json encodes any value as
// JSON, so {{json .text}} yields a quoted, escaped string.
var TemplateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
}

// ParseTemplate parses the text of a body template with TemplateFuncs.
func ParseTemplate(name, text string) (*template.Template, error) {
	t, err := template.New(name).Funcs(TemplateFuncs).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parse template %s: %w", name, err)
	}
	return t, nil
}

func newBuilder(opts *Options) (*builder, error) {
	b := &builder{opts: opts, idPath: gjson.Escape(opts.IDField), textPath: gjson.Escape(opts.TextField),
		imagePath: gjson.Escape(opts.ImageField)}
	if opts.Template != "" {
		t, err := ParseTemplate(opts.TemplateName, opts.Template)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
		b.tmpl = t
	}
	if opts.Pack > 0 {
		b.pk = &packer{form: pack.Form{Endpoint: opts.Endpoint, Model: opts.Model, System: opts.System,
			MaxOut: opts.MaxOutputTokens, Answer: opts.AnswerSchema}}
	}
	return b, nil
}

// build turns one non-blank input line into req. The error is the reason the line is bad.
func (b *builder) build(name string, num int, line []byte, req *request) error {
	*req = request{}
	var body []byte
	if b.opts.Format == FormatText {
		var err error
		req.customID = generatedID(name, num)
		if body, err = b.body(nil, line); err != nil {
			return err
		}
	} else {
		if err := jsonl.Inspect(line, &b.rec); err != nil {
			return err
		}
		if b.rec.IsRequest {
			return b.passThrough(line, req)
		}
		id, err := b.customID(name, num, line)
		if err != nil {
			return err
		}
		req.customID = id
		if body, err = b.body(line, nil); err != nil {
			return err
		}
	}
	b.writeLine(&jsonl.Request{CustomID: req.customID, Method: "POST", URL: b.opts.wireURL(), Body: body}, req)
	return b.describe(body, req)
}

// writeLine makes r req's request line, in the builder's buffer, and notes where its body lies in it.
func (b *builder) writeLine(r *jsonl.Request, req *request) {
	b.buf = r.AppendJSON(b.buf[:0])
	req.line = b.buf
	req.bodyOff, req.bodyLen = len(b.buf)-len(r.Body)-1, len(r.Body) // AppendJSON ends with the body and "}"
}

func (b *builder) passThrough(line []byte, req *request) error {
	r := &b.rec.Request
	if r.URL != "" && r.URL != b.opts.Endpoint && r.URL != b.opts.wireURL() {
		return fmt.Errorf("url %q does not match the endpoint %s", r.URL, b.opts.Endpoint)
	}
	req.customID = r.CustomID
	if b.rec.Canonical && r.URL == b.opts.wireURL() {
		req.line = line // already exactly a request line: write it as it is
		req.bodyOff, req.bodyLen = b.rec.BodyOffset, len(r.Body)
	} else {
		r.Method, r.URL = "POST", b.opts.wireURL()
		b.writeLine(r, req)
	}
	return b.describe(r.Body, req)
}

// describe fills in the model and the embedding inputs of a request body. Its token estimates are left to the
// spooler's goroutine (bodyOff, bodyLen; Options.estimate): they are a third of the reading goroutine's work on
// priced pass-through lines, and the spooler's goroutine, hashing and writing, has time to spare.
func (b *builder) describe(body []byte, req *request) error {
	m, err := jsonl.ModelView(body)
	if err != nil {
		return err
	}
	if m == "" && b.opts.Endpoint != jsonl.EndpointModerations {
		return fmt.Errorf("body has no model")
	}
	if m != b.model {
		b.model = strings.Clone(m) // m aliases the line
	}
	req.model = b.model
	if b.opts.Endpoint == jsonl.EndpointEmbeddings {
		if req.inputs, err = jsonl.EmbeddingInputs(body); err != nil {
			return err
		}
	}
	return nil
}

// estimate returns the estimates of a request body that the options ask for: its prompt tokens (EstimateTokens)
// when a token limit, the estimate or the cost needs them, and the bound of its output tokens (outputBound) when
// the cost does.
func (o *Options) estimate(body []byte) (tokens, outTokens int64) {
	if o.MaxTokens > 0 || o.EstimateTokens || o.Prices != nil {
		tokens = EstimateTokens(body)
	}
	if o.Prices != nil {
		outTokens = outputBound(o.Endpoint, body)
	}
	return tokens, outTokens
}

// EstimateTokens is the prompt-token estimate of a request body that Options.MaxTokens caps: a quarter token per
// ASCII byte, rounded up, plus one token per non-ASCII character. It counts the whole body, JSON syntax and keys
// included, so it runs above a tokenizer's count for English; a character outside ASCII is a token or less in
// OpenAI's tokenizers (CJK text about one token a character).
func EstimateTokens(body []byte) int64 {
	var ascii, other int64
	// Eight ASCII bytes at a time (no high bit set in the word): most bodies are ASCII, and every request of a run
	// is estimated when it is priced.
	for len(body) >= 8 && binary.LittleEndian.Uint64(body)&0x8080808080808080 == 0 {
		ascii += 8
		body = body[8:]
	}
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c < 0x80:
			ascii++
		case c >= 0xC0: // the first byte of a multi-byte UTF-8 character
			other++
		}
	}
	return (ascii+3)/4 + other
}

func generatedID(name string, num int) string { return name + ":" + strconv.Itoa(num) }

func (b *builder) customID(name string, num int, record []byte) (string, error) {
	if b.opts.IDField == "" {
		return generatedID(name, num), nil
	}
	v := jsonl.Peek(record, b.idPath)
	switch { // the ID outlives the line: copy it
	case v.Type == gjson.String && v.Str != "":
		return strings.Clone(v.Str), nil
	case v.Type == gjson.Number && !strings.ContainsAny(v.Raw, ".eE"):
		return strings.Clone(v.Raw), nil
	case !v.Exists():
		return "", fmt.Errorf("id field %q is missing", b.opts.IDField)
	default:
		return "", fmt.Errorf("id field %q is %s, want a non-empty string or an integer", b.opts.IDField, v.Raw)
	}
}

// body renders the request body of a data record (JSON, with text nil) or of a text line (record nil).
func (b *builder) body(record, text []byte) ([]byte, error) {
	if b.tmpl != nil {
		return b.render(record, text)
	}
	if b.opts.Model == "" {
		return nil, fmt.Errorf("not a request line (it has no custom_id and body), and there is no --model or --template to build one")
	}
	var value []byte // the text as a JSON value
	if text != nil {
		b.textBuf = jsonl.AppendString(b.textBuf[:0], string(text))
		value = b.textBuf
	} else {
		v := jsonl.Peek(record, b.textPath)
		switch {
		case !v.Exists():
			return nil, fmt.Errorf("field %q is missing", b.opts.TextField)
		case v.Type == gjson.String, v.IsArray() && (b.opts.Endpoint == jsonl.EndpointEmbeddings || b.opts.Endpoint == jsonl.EndpointModerations):
			value = rawBytes(record, v)
		default:
			return nil, fmt.Errorf("field %q is %s, want a string", b.opts.TextField, v.Raw)
		}
	}
	if b.opts.Endpoint == jsonl.EndpointImageEdits { // record is set: text input is refused for edits
		var err error
		if b.imgBuf, err = appendImageRefs(b.imgBuf[:0], b.opts.ImageField, jsonl.Peek(record, b.imagePath)); err != nil {
			return nil, err
		}
		b.bodyBuf = AppendImageEditBody(b.bodyBuf[:0], b.opts.Model, value, b.imgBuf)
		return b.bodyBuf, nil
	}
	b.bodyBuf = AppendBuiltinBodyLimit(b.bodyBuf[:0], b.opts.Endpoint, b.opts.Model, b.opts.System, b.opts.MaxOutputTokens, value)
	return b.bodyBuf, nil
}

// rawBytes returns v's JSON text as the part of json it was found in; a copy when gjson could not say where (a
// path with modifiers).
func rawBytes(json []byte, v gjson.Result) []byte {
	if v.Index > 0 && v.Index+len(v.Raw) <= len(json) {
		return json[v.Index : v.Index+len(v.Raw)]
	}
	return []byte(v.Raw)
}

// BuiltinBody returns the request body batchctl builds for endpoint from a model, an optional system prompt and the
// record's text, given as a JSON value (usually a string).
func BuiltinBody(endpoint, model, system string, text []byte) []byte {
	return AppendBuiltinBody(nil, endpoint, model, system, text)
}

// AppendBuiltinBody appends BuiltinBody's body to b and returns the extended slice, so a caller can reuse one
// buffer for every record.
func AppendBuiltinBody(b []byte, endpoint, model, system string, text []byte) []byte {
	return AppendBuiltinBodyLimit(b, endpoint, model, system, 0, text)
}

// AppendBuiltinBodyLimit is AppendBuiltinBody with the answer capped at maxOut tokens when it is positive, in the
// endpoint's own field. Anthropic's messages (provider.EndpointMessages) require the cap.
func AppendBuiltinBodyLimit(b []byte, endpoint, model, system string, maxOut int64, text []byte) []byte {
	b = append(b, `{"model":`...)
	b = jsonl.AppendString(b, model)
	if maxOut > 0 {
		switch endpoint {
		case jsonl.EndpointChatCompletions:
			b = append(b, `,"max_completion_tokens":`...)
		case jsonl.EndpointResponses:
			b = append(b, `,"max_output_tokens":`...)
		case jsonl.EndpointCompletions, provider.EndpointMessages:
			b = append(b, `,"max_tokens":`...)
		default:
			maxOut = 0 // embeddings, moderations, images: no output tokens to cap
		}
		if maxOut > 0 {
			b = strconv.AppendInt(b, maxOut, 10)
		}
	}
	switch endpoint {
	case provider.EndpointMessages:
		if system != "" {
			b = append(b, `,"system":`...)
			b = jsonl.AppendString(b, system)
		}
		b = append(b, `,"messages":[{"role":"user","content":`...)
		b = append(b, text...)
		b = append(b, `}]`...)
	case jsonl.EndpointChatCompletions:
		b = append(b, `,"messages":[`...)
		if system != "" {
			b = append(b, `{"role":"system","content":`...)
			b = jsonl.AppendString(b, system)
			b = append(b, `},`...)
		}
		b = append(b, `{"role":"user","content":`...)
		b = append(b, text...)
		b = append(b, `}]`...)
	case jsonl.EndpointResponses:
		b = append(b, `,"input":`...)
		b = append(b, text...)
		if system != "" {
			b = append(b, `,"instructions":`...)
			b = jsonl.AppendString(b, system)
		}
	case jsonl.EndpointEmbeddings, jsonl.EndpointModerations:
		b = append(b, `,"input":`...)
		b = append(b, text...)
	default: // completions, images (an edit also needs its pictures: AppendImageEditBody), videos
		b = append(b, `,"prompt":`...)
		b = append(b, text...)
	}
	return append(b, '}')
}

// render executes the body template on a record decoded with numbers kept as written, or on {"text": line}.
func (b *builder) render(record, text []byte) ([]byte, error) {
	var data any
	if text != nil {
		data = map[string]any{"text": string(text)}
	} else {
		d := json.NewDecoder(bytes.NewReader(record))
		d.UseNumber()
		if err := d.Decode(&data); err != nil {
			return nil, fmt.Errorf("decode record: %w", err)
		}
	}
	b.out.Reset()
	if err := b.tmpl.Execute(&b.out, data); err != nil {
		return nil, err // text/template's errors start with "template: " and name the template
	}
	return CompactBody(b.out.Bytes())
}

// CompactBody checks that a rendered body is one JSON object and returns it compacted onto one line, as a request
// line needs it.
func CompactBody(rendered []byte) ([]byte, error) {
	var out bytes.Buffer
	if err := json.Compact(&out, rendered); err != nil {
		return nil, fmt.Errorf("template rendered invalid JSON: %w", err)
	}
	if out.Len() == 0 || out.Bytes()[0] != '{' {
		return nil, fmt.Errorf("template rendered %.40q, want a JSON object", out.String())
	}
	return out.Bytes(), nil
}

// DefaultOutputTokens bounds the output of a request that sets no max_tokens, max_completion_tokens or
// max_output_tokens, in the cost estimate before sending: a generous answer for classification and extraction
// prompts. Set a limit in the body for an exact bound.
const DefaultOutputTokens = 1024

// outputBound is the most output tokens a request may be billed for: the limit its body sets, else
// DefaultOutputTokens; embeddings and moderations answer no tokens, images the image tokens of their pictures.
func outputBound(endpoint string, body []byte) int64 {
	switch endpoint {
	case jsonl.EndpointEmbeddings, jsonl.EndpointModerations:
		return 0
	case jsonl.EndpointImages, jsonl.EndpointImageEdits:
		return imageOutputBound(body)
	}
	if !bytes.Contains(body, []byte(`"max_`)) {
		return DefaultOutputTokens
	}
	// One pass over the body's keys rather than a search for each name.
	var completion, tokens, output int64
	jsonl.Peek(body, "@this").ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "max_completion_tokens":
			completion = v.Int()
		case "max_tokens":
			tokens = v.Int()
		case "max_output_tokens":
			output = v.Int()
		}
		return true
	})
	if n := cmp.Or(max(completion, 0), max(tokens, 0), max(output, 0)); n > 0 {
		return n
	}
	return DefaultOutputTokens
}

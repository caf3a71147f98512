package emulator

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The image endpoints of the Batch API. In a batch every request is a JSON line, so an edit takes its pictures as
// references (EditImageBodyJsonParam: images[] of {image_url} or {file_id}), never the multipart upload of the
// synchronous API; JSON edits take GPT image models only.
const (
	endpointImages     = "/v1/images/generations"
	endpointImageEdits = "/v1/images/edits"
)

func isImageEndpoint(endpoint string) bool {
	return endpoint == endpointImages || endpoint == endpointImageEdits
}

// Image request limits of the API reference.
const (
	maxImagesPerRequest = 10       // n
	maxEditImages       = 16       // images[] of an edit
	maxImageURLLen      = 20 << 20 // ImageRefParam.image_url
	maxGPTImagePrompt   = 32000
	maxDallE2Prompt     = 1000
	maxDallE3Prompt     = 4000
	maxGPTImage2Edge    = 3840
	maxGPTImage2Pixels  = 3840 * 2160
)

// imageParams is a checked image request: what its answer needs.
type imageParams struct {
	model, prompt  string
	n              int
	width, height  int
	size           string // as answered: WIDTHxHEIGHT
	quality        string // as answered: low, medium, high (GPT), standard, hd (DALL·E 3), standard (DALL·E 2)
	background     string // as answered: transparent or opaque (GPT)
	format         string // png, jpeg, webp
	compression    int
	responseFormat string // b64_json or url (DALL·E)
	inputImages    int    // images[] of an edit
	highFidelity   bool
}

func (p imageParams) gpt() bool { return isGPTImageModel(p.model) }

func isGPTImageModel(m string) bool {
	return strings.HasPrefix(m, "gpt-image-") || strings.HasPrefix(m, "chatgpt-image-")
}

// imageKeys are the parameters each endpoint takes in a JSON body; any other is refused, as the API refuses it.
var imageKeys = map[string][]string{
	endpointImages: {"prompt", "model", "n", "quality", "response_format", "output_format", "output_compression",
		"stream", "partial_images", "size", "moderation", "background", "style", "user"},
	endpointImageEdits: {"model", "images", "mask", "prompt", "n", "quality", "input_fidelity", "size", "user",
		"output_format", "output_compression", "moderation", "background", "stream", "partial_images"},
}

// badParam is a 400 answer's error object.
func badParam(code, param, format string, args ...any) *apiError {
	return &apiError{Message: fmt.Sprintf(format, args...), Type: "invalid_request_error", Param: nullable(param), Code: nullable(code)}
}

// parseImageRequest checks one image request body as the API checks it, and returns what its answer needs or the
// error of its 400 answer. fileExists says whether an edit's file_id names a file; nil accepts any.
func parseImageRequest(endpoint string, raw []byte, fileExists func(id string) bool) (imageParams, *apiError) {
	var body map[string]json.RawMessage
	if json.Unmarshal(raw, &body) != nil {
		return imageParams{}, badParam("invalid_type", "body", "Invalid type for 'body': expected an object.")
	}
	edit := endpoint == endpointImageEdits
	if _, ok := body["image"]; ok && edit {
		return imageParams{}, badParam("unknown_parameter", "image",
			"Unknown parameter: 'image'. A JSON image edit takes 'images', an array of {\"image_url\": ...} or {\"file_id\": ...}; the multipart 'image' upload cannot be sent in a batch.")
	}
	keys := make([]string, 0, len(body))
	for k := range body {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the same error on every run
	for _, k := range keys {
		if !slices.Contains(imageKeys[endpoint], k) {
			return imageParams{}, badParam("unknown_parameter", k, "Unknown parameter: '%s'.", k)
		}
	}

	var p imageParams
	str := func(name string, allowed ...string) (string, *apiError) {
		v, ok := body[name]
		if !ok || isNull(v) {
			return "", nil
		}
		var s string
		if json.Unmarshal(v, &s) != nil {
			return "", badParam("invalid_type", name, "Invalid type for '%s': expected a string, but got %s instead.", name, jsonKind(v))
		}
		if len(allowed) > 0 && !slices.Contains(allowed, s) {
			return "", badParam("invalid_value", name, "Invalid value: '%s'. Supported values are: %s.", s, quoteList(allowed))
		}
		return s, nil
	}
	integer := func(name string, lo, hi int, def int) (int, *apiError) {
		v, ok := body[name]
		if !ok || isNull(v) {
			return def, nil
		}
		var n json.Number
		if json.Unmarshal(v, &n) != nil {
			return 0, badParam("invalid_type", name, "Invalid type for '%s': expected an integer, but got %s instead.", name, jsonKind(v))
		}
		i, err := strconv.Atoi(n.String())
		if err != nil {
			return 0, badParam("invalid_type", name, "Invalid type for '%s': expected an integer, but got a decimal number instead.", name)
		}
		if i < lo || i > hi {
			return 0, badParam("integer_out_of_range", name, "Invalid '%s': integer out of range. Expected a value between %d and %d, but got %d instead.", name, lo, hi, i)
		}
		return i, nil
	}

	var e *apiError
	if p.model, e = str("model"); e != nil {
		return p, e
	}
	gpt := isGPTImageModel(p.model)
	switch {
	case p.model == "":
		p.model = "dall-e-2" // the API's default; a batch line always names its model
		if edit {
			p.model = "gpt-image-1.5"
		}
		gpt = edit
	case edit && !gpt:
		return p, badParam("invalid_value", "model", "Invalid value: '%s'. A JSON image edit takes a GPT image model (gpt-image-1, gpt-image-1-mini, gpt-image-1.5, gpt-image-2, chatgpt-image-latest); DALL·E edits need a multipart upload, which a batch cannot carry.", p.model)
	case !gpt && p.model != "dall-e-2" && p.model != "dall-e-3":
		return p, badParam("invalid_value", "model", "Invalid value: '%s'. Supported values are: 'dall-e-2', 'dall-e-3' and the GPT image models (gpt-image-1, gpt-image-1-mini, gpt-image-1.5, gpt-image-2).", p.model)
	}

	if p.prompt, e = str("prompt"); e != nil {
		return p, e
	}
	limit := maxGPTImagePrompt
	switch p.model {
	case "dall-e-2":
		limit = maxDallE2Prompt
	case "dall-e-3":
		limit = maxDallE3Prompt
	}
	switch n := len([]rune(p.prompt)); {
	case p.prompt == "":
		return p, badParam("missing_required_parameter", "prompt", "Missing required parameter: 'prompt'.")
	case n > limit:
		return p, badParam("string_above_max_length", "prompt", "Invalid 'prompt': string too long. Expected a string with maximum length %d, but got a string with length %d instead.", limit, n)
	}

	hiN := maxImagesPerRequest
	if p.model == "dall-e-3" {
		hiN = 1
	}
	if p.n, e = integer("n", 1, hiN, 1); e != nil {
		return p, e
	}
	if stream := body["stream"]; !isNull(stream) && string(stream) != "false" {
		return p, badParam("invalid_value", "stream", "Invalid value for 'stream': a batch request cannot stream; leave 'stream' out or false.")
	}
	if e = p.sizeFrom(str); e != nil {
		return p, e
	}
	if e = p.qualityFrom(str); e != nil {
		return p, e
	}

	// The parameters of one model family only.
	gptOnly := []string{"output_format", "output_compression", "background", "moderation"}
	dallEOnly := []string{"response_format", "style"}
	for _, k := range keys {
		v := body[k]
		switch {
		case isNull(v):
		case !gpt && slices.Contains(gptOnly, k):
			return p, badParam("invalid_value", k, "'%s' is supported only for the GPT image models, not %s.", k, p.model)
		case gpt && slices.Contains(dallEOnly, k):
			return p, badParam("invalid_value", k, "'%s' is not supported for the GPT image models, which always answer base64 (b64_json).", k)
		case k == "style" && p.model != "dall-e-3":
			return p, badParam("invalid_value", k, "'style' is supported only for dall-e-3.")
		}
	}
	if p.format, e = str("output_format", "png", "jpeg", "webp"); e != nil {
		return p, e
	}
	p.format = cmp.Or(p.format, "png")
	if p.compression, e = integer("output_compression", 0, 100, 100); e != nil {
		return p, e
	}
	if _, e = str("moderation", "low", "auto"); e != nil {
		return p, e
	}
	if _, e = str("style", "vivid", "natural"); e != nil {
		return p, e
	}
	if p.background, e = str("background", "transparent", "opaque", "auto"); e != nil {
		return p, e
	}
	if p.background == "transparent" && p.format == "jpeg" {
		return p, badParam("invalid_value", "background", "A transparent background needs output_format 'png' or 'webp'.")
	}
	if p.background != "transparent" {
		p.background = "opaque" // what auto comes to for the emulator
	}
	if p.responseFormat, e = str("response_format", "url", "b64_json"); e != nil {
		return p, e
	}
	if !gpt {
		p.responseFormat = cmp.Or(p.responseFormat, "url")
	}
	if edit {
		return p, p.refsFrom(body, str, fileExists)
	}
	return p, nil
}

// sizeFrom reads size: the model's fixed sizes, or for gpt-image-2 any WIDTHxHEIGHT within its limits; auto is
// answered as 1024x1024.
func (p *imageParams) sizeFrom(str func(string, ...string) (string, *apiError)) *apiError {
	var sizes []string
	switch {
	case p.model == "dall-e-2":
		sizes = []string{"256x256", "512x512", "1024x1024"}
	case p.model == "dall-e-3":
		sizes = []string{"1024x1024", "1792x1024", "1024x1792"}
	case strings.HasPrefix(p.model, "gpt-image-2"):
		sizes = nil // any WIDTHxHEIGHT, checked below
	default:
		sizes = []string{"auto", "1024x1024", "1536x1024", "1024x1536"}
	}
	s, e := str("size", sizes...)
	if e != nil {
		return e
	}
	if s == "" || s == "auto" {
		s = "1024x1024"
	}
	w, h, ok := parseSize(s)
	if !ok {
		return badParam("invalid_value", "size", "Invalid value: '%s'. Expected 'auto' or WIDTHxHEIGHT, for example '1536x864'.", s)
	}
	if sizes == nil {
		switch {
		case w%16 != 0 || h%16 != 0:
			return badParam("invalid_value", "size", "Invalid size '%s': width and height must both be divisible by 16.", s)
		case w > 3*h || h > 3*w:
			return badParam("invalid_value", "size", "Invalid size '%s': the aspect ratio must be between 1:3 and 3:1.", s)
		case max(w, h) > maxGPTImage2Edge || w*h > maxGPTImage2Pixels:
			return badParam("invalid_value", "size", "Invalid size '%s': the largest size is 3840x2160.", s)
		}
	}
	p.width, p.height, p.size = w, h, fmt.Sprintf("%dx%d", w, h)
	return nil
}

func parseSize(s string) (w, h int, ok bool) {
	ws, hs, found := strings.Cut(s, "x")
	if !found {
		return 0, 0, false
	}
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	return w, h, err1 == nil && err2 == nil && w >= 16 && h >= 16
}

// qualityFrom reads quality; auto is answered as medium (GPT image models) or standard (DALL·E).
func (p *imageParams) qualityFrom(str func(string, ...string) (string, *apiError)) *apiError {
	allowed := []string{"low", "medium", "high", "auto"}
	switch p.model {
	case "dall-e-2":
		allowed = []string{"standard", "auto"}
	case "dall-e-3":
		allowed = []string{"standard", "hd", "auto"}
	}
	q, e := str("quality", allowed...)
	if e != nil {
		return e
	}
	if q == "" || q == "auto" {
		q = "medium"
		if !p.gpt() {
			q = "standard"
		}
	}
	p.quality = q
	return nil
}

// refsFrom checks an edit's images[] and mask: each exactly one of image_url (an http(s) or data: URL) or file_id
// (a file the API holds), nothing else.
func (p *imageParams) refsFrom(body map[string]json.RawMessage, str func(string, ...string) (string, *apiError), fileExists func(string) bool) *apiError {
	images, ok := body["images"]
	if !ok || isNull(images) {
		return badParam("missing_required_parameter", "images", "Missing required parameter: 'images'.")
	}
	var refs []json.RawMessage
	if json.Unmarshal(images, &refs) != nil {
		return badParam("invalid_type", "images", "Invalid type for 'images': expected an array of image references, but got %s instead.", jsonKind(images))
	}
	switch {
	case len(refs) == 0:
		return badParam("empty_array", "images", "Invalid 'images': empty array. Expected an array with minimum length 1, but got an empty array instead.")
	case len(refs) > maxEditImages:
		return badParam("array_above_max_length", "images", "Invalid 'images': array too long. Expected an array with maximum length %d, but got an array with length %d instead.", maxEditImages, len(refs))
	}
	for i, r := range refs {
		if e := checkImageRef(fmt.Sprintf("images[%d]", i), r, fileExists); e != nil {
			return e
		}
	}
	if m, ok := body["mask"]; ok && !isNull(m) {
		if e := checkImageRef("mask", m, fileExists); e != nil {
			return e
		}
	}
	fidelity, e := str("input_fidelity", "high", "low")
	if e != nil {
		return e
	}
	p.inputImages, p.highFidelity = len(refs), fidelity == "high"
	return nil
}

func checkImageRef(param string, raw json.RawMessage, fileExists func(string) bool) *apiError {
	var ref map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &ref) != nil {
		return badParam("invalid_type", param, "Invalid type for '%s': expected an object with 'image_url' or 'file_id', but got %s instead.", param, jsonKind(raw))
	}
	for k := range ref {
		if k != "image_url" && k != "file_id" {
			return badParam("unknown_parameter", param+"."+k, "Unknown parameter: '%s.%s'.", param, k)
		}
	}
	urlRaw, hasURL := ref["image_url"]
	idRaw, hasID := ref["file_id"]
	if hasURL == hasID {
		return badParam("invalid_value", param, "Invalid '%s': provide exactly one of 'image_url' or 'file_id'.", param)
	}
	var v string
	if hasURL {
		if json.Unmarshal(urlRaw, &v) != nil {
			return badParam("invalid_type", param+".image_url", "Invalid type for '%s.image_url': expected a string.", param)
		}
		switch {
		case len(v) > maxImageURLLen:
			return badParam("string_above_max_length", param+".image_url", "Invalid '%s.image_url': string too long. Expected a string with maximum length %d, but got a string with length %d instead.", param, maxImageURLLen, len(v))
		case strings.HasPrefix(v, "data:image/") && strings.Contains(v, ";base64,"):
		case strings.HasPrefix(v, "https://") || strings.HasPrefix(v, "http://"):
		default:
			return badParam("invalid_value", param+".image_url", "Invalid '%s.image_url': expected an http(s) URL or a base64 data URL (data:image/png;base64,...).", param)
		}
		return nil
	}
	if json.Unmarshal(idRaw, &v) != nil || v == "" {
		return badParam("invalid_type", param+".file_id", "Invalid type for '%s.file_id': expected a non-empty string.", param)
	}
	if fileExists != nil && !fileExists(v) {
		return badParam("invalid_value", param+".file_id", "Invalid '%s.file_id': no such File object: %s.", param, v)
	}
	return nil
}

func jsonKind(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func quoteList(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = "'" + v + "'"
	}
	return strings.Join(q, ", ")
}

// Image tokens of one GPT image, by quality, for the standard sizes (the API reference's table for gpt-image-1);
// other sizes scale with their pixels.
var imageOutputTokens = map[string]map[string]int64{
	"low":    {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
	"medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
	"high":   {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}

// Image tokens of one input image of an edit, by input_fidelity.
const (
	inputImageTokens     = 272
	inputImageTokensHigh = 1088
)

// outputTokens are the image tokens of the answer: n images.
func (p imageParams) outputTokens() int64 {
	per, ok := imageOutputTokens[p.quality][p.size]
	if !ok {
		per = (imageOutputTokens[p.quality]["1024x1024"]*int64(p.width)*int64(p.height) + 1024*1024/2) / (1024 * 1024)
	}
	return per * int64(p.n)
}

// imagesUsage is the ImageGenUsage schema.
type imagesUsage struct {
	InputTokens        int64 `json:"input_tokens"`
	InputTokensDetails struct {
		TextTokens  int64 `json:"text_tokens"`
		ImageTokens int64 `json:"image_tokens"`
	} `json:"input_tokens_details"`
	OutputTokens        int64 `json:"output_tokens"`
	OutputTokensDetails struct {
		ImageTokens int64 `json:"image_tokens"`
		TextTokens  int64 `json:"text_tokens"`
	} `json:"output_tokens_details"`
	TotalTokens int64 `json:"total_tokens"`
}

// usage is the answer's usage; GPT image models only, as the API reports it.
func (p imageParams) usage() *imagesUsage {
	if !p.gpt() {
		return nil
	}
	u := &imagesUsage{}
	u.InputTokensDetails.TextTokens = EstimateTokens(p.prompt)
	per := int64(inputImageTokens)
	if p.highFidelity {
		per = inputImageTokensHigh
	}
	u.InputTokensDetails.ImageTokens = int64(p.inputImages) * per
	u.InputTokens = u.InputTokensDetails.TextTokens + u.InputTokensDetails.ImageTokens
	u.OutputTokens = p.outputTokens()
	u.OutputTokensDetails.ImageTokens = u.OutputTokens
	u.TotalTokens = u.InputTokens + u.OutputTokens
	return u
}

// imagesAnswer is the ImagesResponse body of one request, written as a stream (writeJSON): the pictures go from
// their seed into the output file without being held.
type imagesAnswer struct {
	p       imageParams
	created int64
	key     string // the batch and request: the ids of url answers
	seed    uint64 // the request body's hash: the same request draws the same pictures
}

// imagesTail is the ImagesResponse fields after data; GPT image models only.
type imagesTail struct {
	Background   string       `json:"background,omitempty"`
	OutputFormat string       `json:"output_format,omitempty"`
	Quality      string       `json:"quality,omitempty"`
	Size         string       `json:"size,omitempty"`
	Usage        *imagesUsage `json:"usage,omitempty"`
}

// spec is the i-th picture.
func (a imagesAnswer) spec(i int) imageSpec {
	return imageSpec{width: a.p.width, height: a.p.height, format: a.p.format, quality: a.p.quality,
		compression: a.p.compression, seed: a.seed + uint64(i)}
}

// revisedPrompt is DALL·E 3's rewrite of the prompt; the other models send none.
func (a imagesAnswer) revisedPrompt() string {
	if a.p.model != "dall-e-3" {
		return ""
	}
	return "A detailed, high-quality image of " + strings.TrimSuffix(a.p.prompt, ".") + "."
}

// writeJSON writes the body: {"created", "data": [...], then background, output_format, quality, size, usage}.
// bw's own errors are sticky: its owner's Flush reports them.
func (a imagesAnswer) writeJSON(bw *bufio.Writer) error {
	fmt.Fprintf(bw, `{"created":%d,"data":[`, a.created)
	revised := a.revisedPrompt()
	for i := range a.p.n {
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		if a.p.responseFormat == "url" {
			u, _ := json.Marshal("https://images.emulator.invalid/" + fakeID("img-", a.key, strconv.Itoa(i)) + "." + a.p.format)
			_, _ = bw.WriteString(`{"url":`)
			_, _ = bw.Write(u)
		} else {
			_, _ = bw.WriteString(`{"b64_json":"`)
			if err := a.spec(i).writeBase64(bw); err != nil {
				return err
			}
			_ = bw.WriteByte('"')
		}
		if revised != "" {
			r, _ := json.Marshal(revised)
			_, _ = bw.WriteString(`,"revised_prompt":`)
			_, _ = bw.Write(r)
		}
		_ = bw.WriteByte('}')
	}
	_ = bw.WriteByte(']')
	if a.p.gpt() {
		tail, _ := json.Marshal(imagesTail{Background: a.p.background, OutputFormat: a.p.format, Quality: a.p.quality,
			Size: a.p.size, Usage: a.p.usage()})
		_ = bw.WriteByte(',')
		_, _ = bw.Write(tail[1:]) // the fields without the opening brace; the closing one closes the body
	} else {
		_ = bw.WriteByte('}')
	}
	return nil
}

package submit

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/batchctl/batchctl/jsonl"
)

// maxEditImages is the most pictures one edit takes (EditImageBodyJsonParam.images).
const maxEditImages = 16

// AppendImageEditBody appends the built-in /v1/images/edits body to b: {"model", "prompt", "images"}. prompt is a
// JSON value (usually a string) and images the JSON array of image references (ImageRefParam). A batch
// edit is JSON: its pictures are referenced by URL or file ID, never uploaded in the request.
func AppendImageEditBody(b []byte, model string, prompt, images []byte) []byte {
	b = append(b, `{"model":`...)
	b = jsonl.AppendString(b, model)
	b = append(b, `,"prompt":`...)
	b = append(b, prompt...)
	b = append(b, `,"images":`...)
	b = append(b, images...)
	return append(b, '}')
}

// appendImageRefs appends the images[] of an edit built from a record's image field v: a string, or an array of up to
// 16, each an http(s) URL or a data:image/ URL ({"image_url": ...}) or a file ID ({"file_id": ...}); or objects that
// are already such references, passed through. The error says what is wrong with v.
func appendImageRefs(b []byte, field string, v gjson.Result) ([]byte, error) {
	items := []gjson.Result{v}
	switch {
	case !v.Exists():
		return b, fmt.Errorf("field %q is missing", field)
	case v.IsArray():
		items = v.Array()
		if len(items) == 0 || len(items) > maxEditImages {
			return b, fmt.Errorf("field %q holds %d pictures, want 1 to %d", field, len(items), maxEditImages)
		}
	}
	b = append(b, '[')
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		switch {
		case it.Type == gjson.String:
			key, err := imageRefKey(it.Str)
			if err != nil {
				return b, fmt.Errorf("field %q: %w", field, err)
			}
			b = append(b, `{"`...)
			b = append(b, key...)
			b = append(b, `":`...)
			b = jsonl.AppendString(b, it.Str)
			b = append(b, '}')
		case it.IsObject() && validImageRef(it):
			b = append(b, it.Raw...)
		default:
			return b, fmt.Errorf("field %q: %.60s is not a picture: want a URL, a data:image/ URL, a file ID, or {\"image_url\": ...} or {\"file_id\": ...}", field, it.Raw)
		}
	}
	return append(b, ']'), nil
}

// imageRefKey names the reference a string makes: image_url for a URL, file_id for a file ID.
func imageRefKey(s string) (string, error) {
	switch {
	case strings.HasPrefix(s, "https://"), strings.HasPrefix(s, "http://"), strings.HasPrefix(s, "data:image/"):
		return "image_url", nil
	case strings.HasPrefix(s, "file-"):
		return "file_id", nil
	}
	return "", fmt.Errorf("%.60q is neither an http(s) URL, a data:image/ URL nor a file ID (file-…)", s)
}

// validImageRef reports whether an object is an ImageRefParam: exactly one of image_url and file_id, a string, and
// nothing else.
func validImageRef(v gjson.Result) bool {
	n, ok := 0, true
	v.ForEach(func(k, val gjson.Result) bool {
		n++
		ok = (k.Str == "image_url" || k.Str == "file_id") && val.Type == gjson.String && val.Str != ""
		return ok
	})
	return ok && n == 1
}

// imageTokens are the output tokens of one GPT image by quality, for the standard sizes (the API reference's table
// for gpt-image-1); other sizes scale with their pixels.
var imageTokens = map[string]map[string]int64{
	"low":    {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
	"medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
	"high":   {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}

// imageOutputBound is the most output tokens an image request may be billed for: n pictures at its quality and
// size, high and the largest standard size where it leaves them to the model (auto). DALL·E bills per picture, not
// per token: 0.
func imageOutputBound(body []byte) int64 {
	n, quality, size, model := int64(1), "high", "auto", ""
	jsonl.Peek(body, "@this").ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "model":
			model = v.String()
		case "n":
			if v.Type == gjson.Number && v.Int() > 0 {
				n = v.Int()
			}
		case "quality":
			if _, ok := imageTokens[v.Str]; ok {
				quality = v.Str
			}
		case "size":
			if v.Type == gjson.String {
				size = v.Str
			}
		}
		return true
	})
	if strings.HasPrefix(model, "dall-e") {
		return 0
	}
	per, ok := imageTokens[quality][size]
	if !ok {
		per = imageTokens[quality]["1024x1536"] // auto: the largest standard size
		if w, h, found := strings.Cut(size, "x"); found {
			wi, err1 := strconv.ParseInt(w, 10, 64)
			hi, err2 := strconv.ParseInt(h, 10, 64)
			if err1 == nil && err2 == nil && wi > 0 && hi > 0 {
				per = (imageTokens[quality]["1024x1024"]*wi*hi + 1<<19) >> 20
			}
		}
	}
	return n * per
}

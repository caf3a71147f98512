package emulator_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
)

// imageLines writes one request line per body, custom_id "img-<i>".
func imageLines(url string, bodies ...string) []byte {
	var b bytes.Buffer
	for i, body := range bodies {
		fmt.Fprintf(&b, `{"custom_id":"img-%d","method":"POST","url":%q,"body":%s}`+"\n", i, url, body)
	}
	return b.Bytes()
}

// runImages uploads the request lines, runs their batch to the end and returns it with its output and error lines by
// custom_id.
func (e *env) runImages(t *testing.T, endpoint openai.BatchNewParamsEndpoint, data []byte) (*openai.Batch, map[string]outputLine) {
	t.Helper()
	b := e.create(t, e.upload(t, data), endpoint)
	b = e.wait(t, b.ID, openai.BatchStatusCompleted, openai.BatchStatusFailed)
	require.Equal(t, openai.BatchStatusCompleted, b.Status, "%+v", b.Errors)
	lines := map[string]outputLine{}
	for _, l := range append(e.download(t, b.OutputFileID), e.download(t, b.ErrorFileID)...) {
		lines[l.CustomID] = l
	}
	return b, lines
}

// TestImageGenerations: each image model's answer in the ImagesResponse shape openai-go reads, GPT image models
// with usage, size, quality, background and output_format, DALL·E 3 with a revised prompt, DALL·E 2 with a URL by
// default; the pictures decode (PNG) or carry their format's signature (JPEG, WebP), sized by size, quality and n;
// requests the API would refuse are 400 answers in the error file, counted as failed.
func TestImageGenerations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	b, lines := e.runImages(t, openai.BatchNewParamsEndpointV1ImagesGenerations, imageLines("/v1/images/generations",
		`{"model":"gpt-image-1","prompt":"a red fox","n":2,"quality":"low"}`,
		`{"model":"gpt-image-1","prompt":"a red fox","size":"1536x1024","quality":"high","background":"transparent"}`,
		`{"model":"gpt-image-1","prompt":"a red fox","output_format":"jpeg","output_compression":50}`,
		`{"model":"gpt-image-1","prompt":"a red fox","output_format":"webp","size":"1024x1536"}`,
		`{"model":"gpt-image-1","prompt":"a fox","n":11}`,
		`{"model":"gpt-image-1","size":"1024x1024"}`,
		`{"model":"gpt-image-1","prompt":"a fox","size":"640x480"}`,
		`{"model":"gpt-image-1","prompt":"a fox","stream":true}`,
		`{"model":"gpt-image-1","prompt":"a fox","response_format":"url"}`,
		`{"model":"gpt-image-1","prompt":"a fox","image":"x"}`,
	))
	require.Equal(t, int64(10), b.RequestCounts.Total)
	require.Equal(t, int64(4), b.RequestCounts.Completed)
	require.Equal(t, int64(6), b.RequestCounts.Failed)

	answer := func(id string) openai.ImagesResponse {
		t.Helper()
		l := lines[id]
		require.NotNil(t, l.Response, id)
		require.Equal(t, http.StatusOK, l.Response.StatusCode, "%s: %s", id, l.Response.Body)
		var r openai.ImagesResponse
		require.NoError(t, json.Unmarshal(l.Response.Body, &r))
		require.Positive(t, r.Created)
		return r
	}
	decodePNG := func(b64 string) (w, h, size int) {
		t.Helper()
		raw, err := base64.StdEncoding.DecodeString(b64)
		require.NoError(t, err)
		img, err := png.Decode(bytes.NewReader(raw))
		require.NoError(t, err, "the PNG decodes")
		return img.Bounds().Dx(), img.Bounds().Dy(), len(raw)
	}

	low := answer("img-0")
	require.Len(t, low.Data, 2)
	require.NotEqual(t, low.Data[0].B64JSON, low.Data[1].B64JSON, "n images, each its own")
	w, h, lowSize := decodePNG(low.Data[0].B64JSON)
	require.Equal(t, [2]int{1024, 1024}, [2]int{w, h}, "size auto is 1024x1024")
	require.EqualValues(t, "1024x1024", low.Size)
	require.EqualValues(t, "low", low.Quality)
	require.EqualValues(t, "png", low.OutputFormat)
	require.EqualValues(t, "opaque", low.Background)
	require.Equal(t, int64(2*272), low.Usage.OutputTokens)
	require.Equal(t, int64(2*272), low.Usage.OutputTokensDetails.ImageTokens)
	require.Equal(t, emulator.EstimateTokens("a red fox"), low.Usage.InputTokensDetails.TextTokens)
	require.Equal(t, low.Usage.InputTokens+low.Usage.OutputTokens, low.Usage.TotalTokens)

	high := answer("img-1")
	w, h, highSize := decodePNG(high.Data[0].B64JSON)
	require.Equal(t, [2]int{1536, 1024}, [2]int{w, h})
	require.EqualValues(t, "transparent", high.Background)
	require.Equal(t, int64(6208), high.Usage.OutputTokens)
	require.Greater(t, highSize, 1_500_000, "a high-quality 1536x1024 picture is over 1.5 MB")
	require.Less(t, lowSize, 300_000, "a low-quality 1024x1024 one is under 300 KB")
	require.Greater(t, lowSize, 200_000)

	jpeg := answer("img-2")
	raw, err := base64.StdEncoding.DecodeString(jpeg.Data[0].B64JSON)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(raw, []byte{0xFF, 0xD8, 0xFF}) && bytes.HasSuffix(raw, []byte{0xFF, 0xD9}), "JPEG framing")
	require.EqualValues(t, "jpeg", jpeg.OutputFormat)
	webp := answer("img-3")
	raw, err = base64.StdEncoding.DecodeString(webp.Data[0].B64JSON)
	require.NoError(t, err)
	require.Equal(t, "RIFF", string(raw[:4]))
	require.Equal(t, "WEBPVP8 ", string(raw[8:16]))
	require.EqualValues(t, "1024x1536", webp.Size)

	for id, want := range map[string]string{
		"img-4": "integer_out_of_range", "img-5": "missing_required_parameter", "img-6": "invalid_value",
		"img-7": "invalid_value", "img-8": "invalid_value", "img-9": "unknown_parameter",
	} {
		l := lines[id]
		require.NotNil(t, l.Response, id)
		require.Equal(t, http.StatusBadRequest, l.Response.StatusCode, id)
		var body struct {
			Error struct{ Code, Param, Message, Type string }
		}
		require.NoError(t, json.Unmarshal(l.Response.Body, &body))
		require.Equal(t, want, body.Error.Code, "%s: %s", id, body.Error.Message)
		require.Equal(t, "invalid_request_error", body.Error.Type)
		require.NotEmpty(t, body.Error.Param)
	}

	// The batch's usage sums the answers'.
	var in, out int64
	for _, id := range []string{"img-0", "img-1", "img-2", "img-3"} {
		u := answer(id).Usage
		in, out = in+u.InputTokens, out+u.OutputTokens
	}
	require.Equal(t, "gpt-image-1", b.Model)
	require.Equal(t, in, b.Usage.InputTokens)
	require.Equal(t, out, b.Usage.OutputTokens)
}

// TestImageGenerationsDallE: DALL·E answers have no usage nor GPT fields; DALL·E 3 revises the prompt; a URL is the
// default answer, b64_json on request; the same request draws the same picture.
func TestImageGenerationsDallE(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	_, lines := e.runImages(t, openai.BatchNewParamsEndpointV1ImagesGenerations, imageLines("/v1/images/generations",
		`{"model":"dall-e-3","prompt":"a lighthouse","response_format":"b64_json","quality":"hd","size":"1792x1024"}`,
		`{"model":"dall-e-3","prompt":"a lighthouse","n":2}`,
		`{"model":"dall-e-3","prompt":"a lighthouse","output_format":"png"}`,
	))
	e2 := newEnv(t, emulator.Options{})
	_, lines2 := e2.runImages(t, openai.BatchNewParamsEndpointV1ImagesGenerations, imageLines("/v1/images/generations",
		`{"model":"dall-e-2","prompt":"a lighthouse","size":"256x256"}`,
		`{"model":"dall-e-2","prompt":"a lighthouse","size":"256x256","response_format":"b64_json"}`,
	))

	var hd map[string]any
	require.NoError(t, json.Unmarshal(lines["img-0"].Response.Body, &hd))
	require.NotContains(t, hd, "usage", "usage is for the GPT image models only")
	require.NotContains(t, hd, "output_format")
	data := hd["data"].([]any)[0].(map[string]any)
	require.Equal(t, "A detailed, high-quality image of a lighthouse.", data["revised_prompt"])
	raw, err := base64.StdEncoding.DecodeString(data["b64_json"].(string))
	require.NoError(t, err)
	img, err := png.Decode(bytes.NewReader(raw))
	require.NoError(t, err)
	require.Equal(t, 1792, img.Bounds().Dx())
	require.Equal(t, http.StatusBadRequest, lines["img-1"].Response.StatusCode, "dall-e-3 takes n=1 only")
	require.Equal(t, http.StatusBadRequest, lines["img-2"].Response.StatusCode, "output_format is for the GPT image models")

	var url openai.ImagesResponse
	require.NoError(t, json.Unmarshal(lines2["img-0"].Response.Body, &url))
	require.True(t, strings.HasPrefix(url.Data[0].URL, "https://images.emulator.invalid/"), url.Data[0].URL)
	require.Empty(t, url.Data[0].B64JSON)

	// The same request in another emulator and batch draws the same picture.
	_, again := e2.runImages(t, openai.BatchNewParamsEndpointV1ImagesGenerations, imageLines("/v1/images/generations",
		`{"model":"dall-e-2","prompt":"a lighthouse","size":"256x256"}`,
		`{"model":"dall-e-2","prompt":"a lighthouse","size":"256x256","response_format":"b64_json"}`,
	))
	var first, second openai.ImagesResponse
	require.NoError(t, json.Unmarshal(lines2["img-1"].Response.Body, &first))
	require.NoError(t, json.Unmarshal(again["img-1"].Response.Body, &second))
	require.NotEmpty(t, first.Data[0].B64JSON)
	require.Equal(t, first.Data[0].B64JSON, second.Data[0].B64JSON)
}

// TestImageEdits: a batch edit is JSON, its pictures referenced by image_url (http(s) or a data URL) or by the
// file_id of an uploaded file; the multipart 'image' field, a missing or empty images[], a reference with both or
// neither key, an unknown file and a DALL·E model are 400 answers. Input images count as input image tokens.
func TestImageEdits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	pic, err := e.client.Files.New(t.Context(), openai.FileNewParams{
		File: openai.File(bytes.NewReader([]byte("\x89PNG\r\n\x1a\n")), "fox.png", "image/png"), Purpose: openai.FilePurposeVision})
	require.NoError(t, err)
	_, lines := e.runImages(t, openai.BatchNewParamsEndpointV1ImagesEdits, imageLines("/v1/images/edits",
		`{"model":"gpt-image-1","prompt":"add a hat","images":[{"image_url":"https://example.com/fox.png"}],"quality":"low"}`,
		`{"model":"gpt-image-1","prompt":"add a hat","images":[{"file_id":"`+pic.ID+`"},{"image_url":"data:image/png;base64,iVBORw0KGgo="}],"mask":{"file_id":"`+pic.ID+`"},"input_fidelity":"high","quality":"low"}`,
		`{"model":"gpt-image-1","prompt":"add a hat","image":"fox.png"}`,
		`{"model":"gpt-image-1","prompt":"add a hat"}`,
		`{"model":"gpt-image-1","prompt":"add a hat","images":[]}`,
		`{"model":"gpt-image-1","prompt":"add a hat","images":[{"image_url":"https://example.com/a.png","file_id":"file-x"}]}`,
		`{"model":"gpt-image-1","prompt":"add a hat","images":[{"file_id":"file-nope"}]}`,
		`{"model":"gpt-image-1","prompt":"add a hat","images":[{"image_url":"fox.png"}]}`,
	))
	_, dallE := e.runImages(t, openai.BatchNewParamsEndpointV1ImagesEdits, imageLines("/v1/images/edits",
		`{"model":"dall-e-2","prompt":"add a hat","images":[{"image_url":"https://example.com/fox.png"}]}`))
	lines["img-8"] = dallE["img-0"]
	var one, two openai.ImagesResponse
	require.Equal(t, http.StatusOK, lines["img-0"].Response.StatusCode, string(lines["img-0"].Response.Body))
	require.NoError(t, json.Unmarshal(lines["img-0"].Response.Body, &one))
	require.Equal(t, int64(272), one.Usage.InputTokensDetails.ImageTokens)
	require.Equal(t, http.StatusOK, lines["img-1"].Response.StatusCode, string(lines["img-1"].Response.Body))
	require.NoError(t, json.Unmarshal(lines["img-1"].Response.Body, &two))
	require.Equal(t, int64(2*1088), two.Usage.InputTokensDetails.ImageTokens, "two images at high fidelity")
	require.Len(t, two.Data, 1)
	for id, param := range map[string]string{
		"img-2": "image", "img-3": "images", "img-4": "images", "img-5": "images[0]", "img-6": "images[0].file_id",
		"img-7": "images[0].image_url", "img-8": "model",
	} {
		l := lines[id]
		require.Equal(t, http.StatusBadRequest, l.Response.StatusCode, id)
		var body struct {
			Error struct{ Param, Message string }
		}
		require.NoError(t, json.Unmarshal(l.Response.Body, &body))
		require.Equal(t, param, body.Error.Param, "%s: %s", id, body.Error.Message)
	}
}

// TestVideosRefused: /v1/videos, deprecated, is refused at creation with a message that says so; nothing is
// created.
func TestVideosRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, emulator.Options{})
	fileID := e.upload(t, imageLines("/v1/videos", `{"model":"sora-2","prompt":"a cat at a piano"}`))
	_, err := e.client.Batches.New(t.Context(), openai.BatchNewParams{InputFileID: fileID,
		Endpoint: openai.BatchNewParamsEndpointV1Videos, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusBadRequest, apiErr.StatusCode)
	require.Equal(t, "endpoint", apiErr.Param)
	require.Contains(t, apiErr.Message, "deprecated")
	require.Empty(t, e.srv.Batches())
}

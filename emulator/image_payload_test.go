package emulator

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"io"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestImageSpecSize: the payload is as long as Size says, for every format and quality, and its base64 as long as
// Base64Len says; PNGs decode at their size, scanlines longer and shorter than a deflate block alike.
func TestImageSpecSize(t *testing.T) {
	t.Parallel()
	for _, sp := range []imageSpec{
		{width: 1024, height: 1024, format: "png", quality: "low"},
		{width: 1536, height: 1024, format: "png", quality: "high"},
		{width: 256, height: 256, format: "png", quality: "standard"},
		{width: 3840, height: 2160, format: "png", quality: "hd"}, // 3841-byte scanlines
		{width: 16, height: 16, format: "png", quality: "medium"},
		{width: 1024, height: 1536, format: "jpeg", quality: "high", compression: 100},
		{width: 1024, height: 1024, format: "jpeg", quality: "low", compression: 0},
		{width: 1024, height: 1024, format: "webp", quality: "medium", compression: 37},
	} {
		var raw bytes.Buffer
		w := bufio.NewWriter(&raw)
		require.NoError(t, sp.write(w))
		require.NoError(t, w.Flush())
		require.EqualValues(t, sp.Size(), raw.Len(), "%+v", sp)
		var b64 bytes.Buffer
		require.NoError(t, sp.writeBase64(&b64))
		require.EqualValues(t, sp.Base64Len(), b64.Len(), "%+v", sp)
		require.Equal(t, base64.StdEncoding.EncodeToString(raw.Bytes()), b64.String())
		if sp.format == "png" {
			img, err := png.Decode(&raw)
			require.NoError(t, err, "%+v", sp)
			require.Equal(t, sp.width, img.Bounds().Dx())
			require.Equal(t, sp.height, img.Bounds().Dy())
		}
	}
}

// TestImagesAnswerStreams: ten high-quality 1536x1024 pictures, 21 MB of JSON, are written with a few hundred KB
// allocated in all: a picture never sits in memory whole.
func TestImagesAnswerStreams(t *testing.T) {
	p, bad := parseImageRequest(endpointImages, []byte(`{"model":"gpt-image-1","prompt":"a fox","n":10,"size":"1536x1024","quality":"high"}`), nil)
	require.Nil(t, bad)
	a := imagesAnswer{p: p, created: 1, key: "k", seed: 7}
	var cw countingWriter
	w := bufio.NewWriterSize(&cw, 32<<10)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	require.NoError(t, a.writeJSON(w))
	require.NoError(t, w.Flush())
	runtime.ReadMemStats(&after)
	require.Greater(t, cw.n, int64(20_000_000))
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("wrote %d bytes of JSON, allocated %d bytes", cw.n, allocated)
	require.Less(t, allocated, uint64(1<<20), "allocations do not grow with the pictures")

	// And it is the JSON it claims to be.
	var buf bytes.Buffer
	small, _ := parseImageRequest(endpointImages, []byte(`{"model":"gpt-image-1","prompt":"a fox","n":2,"quality":"low","size":"1024x1536"}`), nil)
	bw := bufio.NewWriter(&buf)
	require.NoError(t, imagesAnswer{p: small, created: 1}.writeJSON(bw))
	require.NoError(t, bw.Flush())
	var body struct {
		Data []struct {
			B64JSON string `json:"b64_json"`
		}
		Size  string
		Usage imagesUsage
	}
	require.NoError(t, json.Unmarshal(buf.Bytes(), &body))
	require.Len(t, body.Data, 2)
	require.Equal(t, "1024x1536", body.Size)
	require.Equal(t, int64(2*408), body.Usage.OutputTokens)
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// BenchmarkImagesAnswer writes one high-quality 1024x1024 picture's answer (1.4 MB of JSON).
func BenchmarkImagesAnswer(b *testing.B) {
	p, bad := parseImageRequest(endpointImages, []byte(`{"model":"gpt-image-1","prompt":"a fox","quality":"high"}`), nil)
	if bad != nil {
		b.Fatal(bad.Message)
	}
	w := bufio.NewWriterSize(io.Discard, 32<<10)
	a := imagesAnswer{p: p, created: 1, key: "k"}
	b.SetBytes(a.spec(0).Base64Len())
	b.ReportAllocs()
	for b.Loop() {
		if err := a.writeJSON(w); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzParseImageRequest: any body is accepted or refused with a 400 error naming a code and a message, never a
// panic; an accepted request draws 1 to 10 pictures of a positive size.
func FuzzParseImageRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"gpt-image-1","prompt":"p","n":3,"size":"1536x1024","quality":"high","output_format":"webp"}`,
		`{"model":"gpt-image-2","prompt":"p","size":"1536x864"}`,
		`{"model":"dall-e-3","prompt":"p","style":"vivid","response_format":"b64_json"}`,
		`{"model":"gpt-image-1","prompt":"p","images":[{"image_url":"https://x/y.png"}],"mask":{"file_id":"f"}}`,
		`{"prompt":"p","n":1.5}`, `{"model":7}`, `[]`, `{"images":[{}]}`,
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, edit bool) {
		endpoint := endpointImages
		if edit {
			endpoint = endpointImageEdits
		}
		p, bad := parseImageRequest(endpoint, body, func(id string) bool { return id == "f" })
		if bad != nil {
			if bad.Message == "" || bad.Code == nil || *bad.Code == "" || bad.Type != "invalid_request_error" {
				t.Fatalf("error without code or message: %+v", bad)
			}
			return
		}
		if p.n < 1 || p.n > maxImagesPerRequest || p.width <= 0 || p.height <= 0 || p.prompt == "" {
			t.Fatalf("accepted %+v", p)
		}
		if p.width*p.height > maxGPTImage2Pixels {
			t.Fatalf("accepted a picture of %dx%d", p.width, p.height)
		}
	})
}

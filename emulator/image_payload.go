package emulator

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/adler32"
	"hash/crc32"
	"io"
	"math/rand/v2"
)

// An image answer carries its picture as base64 in the JSON body, so an image batch's output file is large: a few
// hundred KB to a few MB a line, as the real service's are. The emulator writes these pictures as a stream, from a
// seed, straight into the output file: one image never sits in memory whole.
//
// A PNG is a real one: an 8-bit-or-less grayscale image of the requested size whose pixels are deterministic noise,
// in stored (uncompressed) deflate blocks, so image/png decodes it and its size follows width × height and the
// quality (the bit depth: 2 bits a pixel low, 4 medium, 8 high). Noise does not compress, like a real picture's
// already compressed bytes, so Postgres cannot shrink the stored rows either. JPEG and WebP payloads have their
// format's framing (SOI … EOI; RIFF/WEBP) around noise of a size that follows output_compression, but no decodable
// picture.

// imageSpec is one picture to write.
type imageSpec struct {
	width, height int
	format        string // png, jpeg or webp
	quality       string // low, medium, high (GPT image models), standard or hd (DALL·E)
	compression   int    // output_compression, 0..100 (jpeg and webp)
	seed          uint64
}

// bitDepth is the grayscale bit depth of a PNG of the quality.
func (sp imageSpec) bitDepth() int {
	switch sp.quality {
	case "low":
		return 2
	case "high", "hd":
		return 8
	default: // medium, standard
		return 4
	}
}

// pngRowBytes is one scanline of the PNG without its filter byte.
func (sp imageSpec) pngRowBytes() int64 {
	return (int64(sp.width)*int64(sp.bitDepth()) + 7) / 8
}

// lossyBytes is the size of the noise in a JPEG or WebP payload: bits a pixel by quality, scaled by
// output_compression (at least a tenth).
func (sp imageSpec) lossyBytes() int64 {
	bitsPerPixel := map[string]int64{"low": 1, "medium": 2, "high": 4, "hd": 4, "standard": 2}[sp.quality]
	if bitsPerPixel == 0 {
		bitsPerPixel = 2
	}
	c := int64(max(min(sp.compression, 100), 10))
	n := int64(sp.width) * int64(sp.height) * bitsPerPixel / 8 * c / 100
	if sp.format == "webp" {
		n = n * 4 / 5
	}
	return max(n, 1024)
}

// maxStoredBlock is the most bytes one stored deflate block holds.
const maxStoredBlock = 65535

// Size is the length of the payload in bytes, before base64.
func (sp imageSpec) Size() int64 {
	switch sp.format {
	case "jpeg":
		n := sp.lossyBytes()
		segments := (n + maxSegment - 1) / maxSegment
		return 2 + 18 + n + 4*segments + 2
	case "webp":
		n := sp.lossyBytes()
		return 12 + 8 + n + n%2
	default:
		raw := int64(sp.height) * (1 + sp.pngRowBytes())
		blocks := (raw + maxStoredBlock - 1) / maxStoredBlock
		// signature, IHDR, one IDAT a block (12 bytes of chunk framing, 5 of block header; the zlib header rides in
		// the first, the Adler-32 in the last), IEND
		return 8 + 25 + raw + blocks*(12+5) + 2 + 4 + 12
	}
}

// Base64Len is the length of the payload's standard base64 text.
func (sp imageSpec) Base64Len() int64 { return (sp.Size() + 2) / 3 * 4 }

// maxSegment is the most bytes of data one JPEG comment segment carries.
const maxSegment = 65533

// writeBase64 writes the payload as standard base64 to w.
func (sp imageSpec) writeBase64(w io.Writer) error {
	enc := base64.NewEncoder(base64.StdEncoding, w)
	bw := bufio.NewWriterSize(enc, 32<<10)
	if err := sp.write(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	return nil
}

// write writes the payload's bytes.
func (sp imageSpec) write(w *bufio.Writer) error {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], sp.seed)
	noise := rand.NewChaCha8(seed)
	switch sp.format {
	case "jpeg":
		return sp.writeJPEG(w, noise)
	case "webp":
		return sp.writeWebP(w, noise)
	default:
		return sp.writePNG(w, noise)
	}
}

// writeNoise writes n bytes of noise through buf.
func writeNoise(w io.Writer, noise *rand.ChaCha8, buf []byte, n int64) error {
	for n > 0 {
		b := buf[:min(int64(len(buf)), n)]
		_, _ = noise.Read(b)
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("write image: %w", err)
		}
		n -= int64(len(b))
	}
	return nil
}

func (sp imageSpec) writeJPEG(w *bufio.Writer, noise *rand.ChaCha8) error {
	// SOI, then an APP0 JFIF segment, then the noise in comment segments, then EOI.
	_, _ = w.Write([]byte{0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0})
	buf := make([]byte, 32<<10)
	for n := sp.lossyBytes(); n > 0; {
		seg := min(n, maxSegment)
		_, _ = w.Write([]byte{0xFF, 0xFE, byte((seg + 2) >> 8), byte(seg + 2)})
		if err := writeNoise(w, noise, buf, seg); err != nil {
			return err
		}
		n -= seg
	}
	_, err := w.Write([]byte{0xFF, 0xD9})
	if err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	return nil
}

func (sp imageSpec) writeWebP(w *bufio.Writer, noise *rand.ChaCha8) error {
	n := sp.lossyBytes()
	var hdr [20]byte
	copy(hdr[0:], "RIFF")
	binary.LittleEndian.PutUint32(hdr[4:], uint32(sp.Size()-8))
	copy(hdr[8:], "WEBPVP8 ")
	binary.LittleEndian.PutUint32(hdr[16:], uint32(n))
	_, _ = w.Write(hdr[:])
	if err := writeNoise(w, noise, make([]byte, 32<<10), n+n%2); err != nil { // a chunk is padded to even length
		return err
	}
	return nil
}

// chunkWriter writes one PNG chunk, its CRC computed as it goes.
type chunkWriter struct {
	w   *bufio.Writer
	crc hash.Hash32
}

func (c *chunkWriter) begin(typ string, length int) {
	var b [8]byte
	binary.BigEndian.PutUint32(b[:4], uint32(length))
	copy(b[4:], typ)
	_, _ = c.w.Write(b[:])
	c.crc.Reset()
	_, _ = c.crc.Write(b[4:])
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	_, _ = c.crc.Write(p)
	return c.w.Write(p)
}

func (c *chunkWriter) end() error {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], c.crc.Sum32())
	if _, err := c.w.Write(b[:]); err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	return nil
}

func (sp imageSpec) writePNG(w *bufio.Writer, noise *rand.ChaCha8) error {
	_, _ = w.Write([]byte("\x89PNG\r\n\x1a\n"))
	c := &chunkWriter{w: w, crc: crc32.NewIEEE()}
	var ihdr [13]byte
	binary.BigEndian.PutUint32(ihdr[0:], uint32(sp.width))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(sp.height))
	ihdr[8], ihdr[9] = byte(sp.bitDepth()), 0 // grayscale; compression, filter and interlace methods 0
	c.begin("IHDR", len(ihdr))
	_, _ = c.Write(ihdr[:])
	if err := c.end(); err != nil {
		return err
	}

	// The zlib stream of the scanlines (each a filter byte 0 and noise), one stored block per IDAT chunk.
	rowBytes := sp.pngRowBytes()
	raw := int64(sp.height) * (1 + rowBytes)
	block := make([]byte, maxStoredBlock)
	adler := adler32.New()
	var pos int64 // offset in the raw scanline stream
	for first := true; pos < raw; first = false {
		n := min(raw-pos, maxStoredBlock)
		b := block[:n]
		_, _ = noise.Read(b)
		line := 1 + rowBytes
		for start := (pos + line - 1) / line * line; start < pos+n; start += line {
			b[start-pos] = 0 // each scanline's filter byte: none
		}
		_, _ = adler.Write(b)
		last := pos+n == raw
		length := 5 + int(n)
		if first {
			length += 2
		}
		if last {
			length += 4
		}
		c.begin("IDAT", length)
		if first {
			_, _ = c.Write([]byte{0x78, 0x01})
		}
		final := byte(0)
		if last {
			final = 1
		}
		_, _ = c.Write([]byte{final, byte(n), byte(n >> 8), ^byte(n), ^byte(n >> 8)})
		_, _ = c.Write(b)
		if last {
			var sum [4]byte
			binary.BigEndian.PutUint32(sum[:], adler.Sum32())
			_, _ = c.Write(sum[:])
		}
		if err := c.end(); err != nil {
			return err
		}
		pos += n
	}
	c.begin("IEND", 0)
	return c.end()
}

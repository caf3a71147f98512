package web

import (
	"testing"
	"time"

	"github.com/batchctl/batchctl/store"
)

// FuzzParseCursor: a page cursor comes from the browser's URL; any string is refused or read back to a cursor that
// formats to the same value.
func FuzzParseCursor(f *testing.F) {
	f.Add("")
	f.Add("1733212800000000~batch_abc")
	f.Add("-5~x~y")
	f.Add("12~")
	f.Add("~batch_1")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCursor(s)
		if err != nil || s == "" {
			return
		}
		if c.BatchID == "" {
			t.Fatalf("%q: a cursor without a batch ID was accepted", s)
		}
		again, err := parseCursor(formatCursor(c))
		if err != nil || again != c {
			t.Fatalf("%q: read %+v, formatted and read again %+v (%v)", s, c, again, err)
		}
	})
}

func TestCursorRoundTrip(t *testing.T) {
	c := store.Cursor{At: time.Date(2026, 12, 3, 7, 0, 0, 123456000, time.UTC), BatchID: "batch_x~y"}
	got, err := parseCursor(formatCursor(c))
	if err != nil || !got.At.Equal(c.At) || got.BatchID != c.BatchID {
		t.Fatalf("got %+v, %v; want %+v", got, err, c)
	}
}

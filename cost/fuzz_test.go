package cost

import (
	"testing"
)

// FuzzParse: a price file of any content is either refused or gives non-negative prices; it never panics.
func FuzzParse(f *testing.F) {
	f.Add(defaultPrices)
	f.Add([]byte(`{"m": {"input": 0.075, "output": 0.3}}`))
	f.Add([]byte(`{"m": {"input": 1e-7, "output": "2"}}`))
	f.Add([]byte(`{"_date": "x", "m": {"input": 1/3, "output": 1e400}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := parse(data, &Table{prices: map[string]Price{}})
		if err != nil {
			return
		}
		for m, p := range tab.prices {
			if p.Input < 0 || p.CachedInput < 0 || p.Output < 0 {
				t.Fatalf("model %s: negative price %+v", m, p)
			}
		}
	})
}

// FuzzParseUSD: an amount either parses to one that prints back to the same value or is refused.
func FuzzParseUSD(f *testing.F) {
	for _, s := range []string{"0", "1.5", "0.000000000001", "-3.25", "1e3", "1e999999999", "9223372.036854775807", "x", "1/3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseUSD(s)
		if err != nil {
			return
		}
		back, err := ParseUSD(p.USD())
		if err != nil || back != p {
			t.Fatalf("%q → %d → %q → %d, %v", s, p, p.USD(), back, err)
		}
	})
}

// Package cost is the one home of batchctl's price table and of the arithmetic that turns token usage into money.
//
// Prices are Batch API prices in USD per 1M tokens (half the synchronous price: the Batch API is 50% off), kept as
// integer micro-dollars per 1M tokens, so that tokens × price is an exact integer number of pico-dollars (1e-12
// USD): a batch's cost is exact to the token, with no float rounding, and is stored as Postgres numeric.
//
// A model without a price is unknown, never free: lookups report ok=false and callers show "-" or null.
package cost

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/bits"
	"regexp"
	"strconv"
	"strings"
)

// SyncFactor is how much more the synchronous API charges than the Batch API for the same tokens: the Batch API
// takes 50% off input, cached input and output alike.
const SyncFactor = 2

// ErrOverflow is returned when an amount does not fit in Pico (about 9.2 million USD).
var ErrOverflow = errors.New("cost overflows 9.2 million USD")

// Price is one model's Batch API price, in micro-dollars (1e-6 USD) per 1M tokens for each kind of token.
type Price struct {
	Input       int64 // uncached input (prompt) tokens
	CachedInput int64 // input tokens served from the prompt cache
	Output      int64 // output (completion) tokens, reasoning tokens included
}

// Usage is the token usage to price. Input includes Cached, as the API reports it (prompt_tokens counts the cached
// tokens too). Output includes reasoning tokens, as the API reports it (completion_tokens / output_tokens count
// them), so reasoning is billed at the output price once and is never added again.
type Usage struct {
	Input  int64
	Cached int64
	Output int64
}

// Pico is an amount of money in pico-dollars (1e-12 USD).
type Pico int64

// Cost is the price of u: (Input − Cached) × Price.Input + Cached × Price.CachedInput + Output × Price.Output, per
// 1M tokens. Cached tokens beyond Input (never reported by the API) are billed as cached and no uncached input is
// counted.
func (p Price) Cost(u Usage) (Pico, error) {
	uncached := max(u.Input-u.Cached, 0)
	var total Pico
	for _, term := range [][2]int64{{uncached, p.Input}, {u.Cached, p.CachedInput}, {u.Output, p.Output}} {
		if term[0] < 0 || term[1] < 0 {
			return 0, fmt.Errorf("negative tokens or price: %d × %d", term[0], term[1])
		}
		// tokens × micro-dollars per 1M tokens = pico-dollars.
		hi, lo := bits.Mul64(uint64(term[0]), uint64(term[1]))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, ErrOverflow
		}
		var err error
		if total, err = total.Add(Pico(lo)); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// Add is c + d, or ErrOverflow.
func (c Pico) Add(d Pico) (Pico, error) {
	s := c + d
	if (d > 0 && s < c) || (d < 0 && s > c) {
		return 0, ErrOverflow
	}
	return s, nil
}

// Sync is what the same tokens cost on the synchronous API: SyncFactor × c.
func (c Pico) Sync() (Pico, error) {
	if c > math.MaxInt64/SyncFactor || c < math.MinInt64/SyncFactor {
		return 0, ErrOverflow
	}
	return c * SyncFactor, nil
}

// USD is c in dollars, exactly, with 12 decimals: "0.000123450000". It is what is stored in numeric columns.
func (c Pico) USD() string {
	neg := c < 0
	u := uint64(c)
	if neg {
		u = uint64(-c)
	}
	s := fmt.Sprintf("%d.%012d", u/1e12, u%1e12)
	if neg {
		s = "-" + s
	}
	return s
}

// Float is c in dollars as a float64, for metrics and display; never for storage.
func (c Pico) Float() float64 { return float64(c) / 1e12 }

// ParseUSD reads an amount in dollars with at most 12 decimals ("1.5", "0.000000000001", a numeric column's text)
// exactly.
func ParseUSD(s string) (Pico, error) {
	v, err := parseScaled(s, 12)
	if err != nil {
		return 0, fmt.Errorf("amount %q: %w", s, err)
	}
	return Pico(v), nil
}

// plainDecimal is the only number form accepted: no exponent, which could ask big.Rat for 10^1000000000.
var plainDecimal = regexp.MustCompile(`^-?[0-9]{1,20}(\.[0-9]{1,30})?$`)

// parseScaled reads a plain decimal ("0.0375", no exponent) and returns it times 10^scale, failing when it has more
// decimals than scale or does not fit in an int64.
func parseScaled(s string, scale int) (int64, error) {
	s = strings.TrimSpace(s)
	if !plainDecimal.MatchString(s) {
		return 0, errors.New("not a plain decimal number")
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return 0, errors.New("not a number")
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil)))
	if !r.IsInt() {
		return 0, fmt.Errorf("more than %d decimals", scale)
	}
	n := r.Num()
	if !n.IsInt64() {
		return 0, ErrOverflow
	}
	return n.Int64(), nil
}

// formatMicro prints a micro-dollar price in dollars, shortest form: 37500 → "0.0375".
func formatMicro(v int64) string {
	return strconv.FormatFloat(float64(v)/1e6, 'f', -1, 64)
}

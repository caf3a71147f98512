package cost

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
)

//go:embed prices.json
var defaultPrices []byte

// EnvPrices names the environment variable that points at a price file, the fallback of --prices.
const EnvPrices = "BATCHCTL_PRICES"

// Table maps models to their Batch API prices.
type Table struct {
	// Date and Source say when and where the default prices were read (the "_date" and "_source" keys of the
	// file); a --prices file may set its own.
	Date, Source string
	prices       map[string]Price
}

// Default is the price table shipped in the binary (cost/prices.json).
func Default() *Table {
	t, err := parse(defaultPrices, &Table{prices: map[string]Price{}})
	if err != nil {
		panic(fmt.Sprintf("cost: embedded prices.json: %v", err)) // a build defect, caught by the package's tests
	}
	return t
}

// Load returns the default table with the price file at path merged over it: a model in the file replaces the
// default entry, new models are added. An empty path returns the defaults. Errors name the file.
//
// The file is a JSON object {"MODEL": {"input": 0.075, "cached_input": 0.0375, "output": 0.30}, ...} in USD per 1M
// tokens at Batch API prices, at most 6 decimals each. cached_input may be left out: cached tokens are then billed
// at the input price (no discount assumed). Keys starting with "_" are comments ("_date" and "_source" are kept).
func Load(path string) (*Table, error) {
	t := Default()
	if path == "" {
		return t, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read price file: %w", err)
	}
	if _, err := parse(data, t); err != nil {
		return nil, fmt.Errorf("price file %s: %w", path, err)
	}
	return t, nil
}

// entry is one model in a price file.
type entry struct {
	Input       json.RawMessage `json:"input"`
	CachedInput json.RawMessage `json:"cached_input"`
	Output      json.RawMessage `json:"output"`
}

// parse merges the price file data into t.
func parse(data []byte, t *Table) (*Table, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("want a JSON object of models: %w", err)
	}
	models := make([]string, 0, len(raw))
	for k := range raw {
		models = append(models, k)
	}
	sort.Strings(models) // the first error is the same on every run
	for _, model := range models {
		v := raw[model]
		if strings.HasPrefix(model, "_") {
			var s string
			if model == "_date" || model == "_source" {
				if err := json.Unmarshal(v, &s); err != nil {
					return nil, fmt.Errorf("%s: want a string", model)
				}
				if model == "_date" {
					t.Date = s
				} else {
					t.Source = s
				}
			}
			continue
		}
		if strings.TrimSpace(model) == "" {
			return nil, fmt.Errorf("an empty model name")
		}
		var e entry
		dec := json.NewDecoder(bytes.NewReader(v))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("model %s: want {\"input\": N, \"cached_input\": N, \"output\": N}: %w", model, err)
		}
		if e.Input == nil || e.Output == nil {
			return nil, fmt.Errorf("model %s: input and output prices are required", model)
		}
		if e.CachedInput == nil {
			e.CachedInput = e.Input
		}
		var p Price
		for _, f := range []struct {
			name string
			n    json.RawMessage
			dst  *int64
		}{{"input", e.Input, &p.Input}, {"cached_input", e.CachedInput, &p.CachedInput}, {"output", e.Output, &p.Output}} {
			var n json.Number
			if err := json.Unmarshal(f.n, &n); err != nil || f.n[0] == '"' {
				return nil, fmt.Errorf("model %s: %s price %s: want a number", model, f.name, f.n)
			}
			micro, err := parseScaled(n.String(), 6)
			if err != nil {
				return nil, fmt.Errorf("model %s: %s price %s: %w", model, f.name, f.n, err)
			}
			if micro < 0 {
				return nil, fmt.Errorf("model %s: %s price %s is negative", model, f.name, f.n)
			}
			*f.dst = micro
		}
		t.prices[model] = p
	}
	return t, nil
}

// snapshotSuffix is the date OpenAI appends to a model's snapshot name: gpt-4o-mini-2024-07-18; Anthropic's is
// YYYYMMDD, on Claude models only: claude-haiku-4-5-20251001.
var (
	snapshotSuffix       = regexp.MustCompile(`-\d{4}-\d{2}-\d{2}$`)
	claudeSnapshotSuffix = regexp.MustCompile(`^(claude-.+)-\d{8}$`)
)

// Resolve names the table entry that prices model: the model itself when the table has it (so a snapshot can be
// priced on its own), else the model without a trailing snapshot date (-YYYY-MM-DD; -YYYYMMDD for Claude) when the
// table has that. Nothing
// else: no prefix matching, since gpt-4o-mini is not priced like gpt-4o nor o3-pro like o3. ok is false when
// neither is in the table.
func (t *Table) Resolve(model string) (name string, ok bool) {
	if _, ok := t.prices[model]; ok {
		return model, true
	}
	for _, base := range []string{snapshotSuffix.ReplaceAllString(model, ""), claudeSnapshotSuffix.ReplaceAllString(model, "$1")} {
		if base == model {
			continue
		}
		if _, ok := t.prices[base]; ok {
			return base, true
		}
	}
	return "", false
}

// Lookup is the price of model (see Resolve); ok is false when the model is unknown.
func (t *Table) Lookup(model string) (Price, bool) {
	name, ok := t.Resolve(model)
	if !ok {
		return Price{}, false
	}
	return t.prices[name], true
}

// Cost prices u for model; ok is false when the model has no price.
func (t *Table) Cost(model string, u Usage) (c Pico, ok bool, err error) {
	p, ok := t.Lookup(model)
	if !ok {
		return 0, false, nil
	}
	c, err = p.Cost(u)
	if err != nil {
		return 0, true, fmt.Errorf("cost of model %s: %w", model, err)
	}
	return c, true, nil
}

// Models lists the priced models, sorted.
func (t *Table) Models() []string {
	out := make([]string, 0, len(t.prices))
	for m := range t.prices {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// String prints one model's price the way a price file writes it.
func (p Price) String() string {
	return fmt.Sprintf(`{"input": %s, "cached_input": %s, "output": %s}`, formatMicro(p.Input), formatMicro(p.CachedInput), formatMicro(p.Output))
}

package main

import (
	"encoding/json"
	"fmt"

	"github.com/batchctl/batchctl/cost"
	"github.com/batchctl/batchctl/store"
)

// usdNumber is a stored cost as a JSON number, exact; nil (null) when unknown.
func usdNumber(usd *string) *json.Number {
	if usd == nil {
		return nil
	}
	n := json.Number(*usd)
	return &n
}

// usdCell shows a cost in a table: dollars to 6 decimals (the exact amount is in --output json), - when unknown.
func usdCell(usd *string) string {
	if usd == nil {
		return "-"
	}
	p, err := cost.ParseUSD(*usd)
	if err != nil {
		return "?"
	}
	return usdText(p)
}

func usdText(p cost.Pico) string { return fmt.Sprintf("%.6f", p.Float()) }

// costTotal adds up the known costs of loaded batches and remembers whether one was unknown.
type costTotal struct {
	sum     cost.Pico
	unknown bool
}

func (c *costTotal) add(u store.Usage) {
	if u.CostUSD == nil {
		// Loaded without usage (nothing answered) costs nothing; with usage and no cost, the price was unknown.
		c.unknown = c.unknown || u.PromptTokens != nil
		return
	}
	p, err := cost.ParseUSD(*u.CostUSD)
	if err == nil {
		p, err = c.sum.Add(p)
	}
	if err != nil {
		c.unknown = true
		return
	}
	c.sum = p
}

// cell is the total: the known sum, "+?" appended when some cost is unknown.
func (c *costTotal) cell() string {
	if c.unknown {
		return usdText(c.sum) + "+?"
	}
	return usdText(c.sum)
}

package poll

import (
	"cmp"
	"log/slog"

	"github.com/batchctl/batchctl/cost"
)

// pricing prices a batch's usage sum with the daemon's price table (Config.Prices). The model is the batch row's
// (the API's Batch.model), else the first response body's; a snapshot name resolves to its base entry (see
// cost.Table.Resolve). Reasoning tokens are billed as the output tokens they are part of, never added again.
type pricing struct {
	prices     *cost.Table
	unknown    *cost.UnknownWarner
	log        *slog.Logger
	batchModel string
	bodyModel  string

	model string     // the model priced, set by price
	cost  *cost.Pico // the price, when known
}

// newUsageSum starts the usage sum of one load of a batch of model batchModel ("" when the API named none).
func (d *Daemon) newUsageSum(batchModel string, log *slog.Logger) *usageSum {
	return &usageSum{pricing: pricing{prices: d.cfg.Prices, unknown: &d.unknownPrices, log: log, batchModel: batchModel}}
}

// price is the cost of the tokens in USD, exact, as the cost_usd column takes it; nil when the model has no price,
// and when the tokens include input image tokens (image edits), which the API prices apart from text tokens and a
// price table entry (one input price) cannot.
func (p *pricing) price(input, cached, imageInput, output int64) *string {
	p.model = cmp.Or(p.batchModel, p.bodyModel)
	if imageInput > 0 {
		p.log.Warn("batch cost not computed: its input image tokens have their own price, which the price table has not; cost_usd stays null",
			"model", p.model, "image_input_tokens", imageInput)
		return nil
	}
	c, ok, err := p.prices.Cost(p.model, cost.Usage{Input: input, Cached: cached, Output: output})
	switch {
	case err != nil:
		p.log.Error("batch cost not computed; cost_usd stays null", "model", p.model, "error", err)
		return nil
	case !ok:
		p.unknown.Warn(p.model)
		return nil
	}
	p.cost = &c
	usd := c.USD()
	return &usd
}

// count adds a committed load's cost to the cost metric: once per batch, by the poller that committed the load.
func (p *pricing) count(m *Metrics) {
	if p.cost != nil {
		name, _ := p.prices.Resolve(p.model)
		m.CostUSD.WithLabelValues(name).Add(p.cost.Float())
	}
}

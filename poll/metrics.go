package poll

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/batchctl/batchctl/store"
)

// Metrics are the daemon's Prometheus metrics. Gauges that describe the database (batches by status, the oldest
// batch in flight) are read from it at scrape time, so every daemon of a shared database reports the same values.
type Metrics struct {
	PollCalls      *prometheus.CounterVec // API calls by kind: get, list, download, file
	PollErrors     *prometheus.CounterVec // failed API calls by kind and error class
	RowsLoaded     prometheus.Counter
	LoadDuration   prometheus.Histogram
	Requests       *prometheus.CounterVec // loaded requests by outcome: ok, http_<code>, error code
	LoadMismatches prometheus.Counter     // loads whose row count differs from request_counts.total
	// LoadsWithoutOutput counts completed batches loaded without the output file they should have (OutputGrace).
	LoadsWithoutOutput prometheus.Counter
	// OutputExpired counts batches whose output files expired before they were loaded: results lost, not retried.
	OutputExpired prometheus.Counter
	// ShortDownloads counts downloads of a batch's files that held fewer rows than its request counts and were
	// started again; ShortLoads the loads committed short all the same, after MaxLoadDownloads tries.
	ShortDownloads prometheus.Counter
	ShortLoads     prometheus.Counter
	BatchDuration  *prometheus.HistogramVec // creation to end, by final status, observed by the daemon that loaded it
	// CostUSD is what loaded batches cost at the price table's Batch API prices, by priced model (the table's entry,
	// a snapshot counted under its base model), added once per batch by the poller that commits its load.
	CostUSD *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them, and a collector reading s, with reg.
func NewMetrics(reg prometheus.Registerer, s *store.Store, logger *slog.Logger) *Metrics {
	m := &Metrics{
		PollCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "batchctl_api_calls_total", Help: "Batch API calls made by the poller, by kind (get, list, download, file: a file object read for its expiry).",
		}, []string{"kind"}),
		PollErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "batchctl_api_errors_total", Help: "Failed Batch API calls, by kind and class (transient, auth, not_found, permanent, local, no_credentials).",
		}, []string{"kind", "class"}),
		RowsLoaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchctl_result_rows_loaded_total", Help: "Result rows committed to the results table.",
		}),
		LoadDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "batchctl_load_duration_seconds", Help: "Time to load one batch's results.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "batchctl_requests_total", Help: "Loaded requests by outcome: ok, http_<status>, or the error code.",
		}, []string{"outcome"}),
		BatchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "batchctl_batch_duration_seconds",
			Help: "Time from a batch's creation to its end, by final status; observed once, by the poller that loaded its results.",
			// From a minute to past the 24 h window, where expiry and cancelling end a batch.
			Buckets: []float64{60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 12 * 3600, 24 * 3600, 25 * 3600},
		}, []string{"status"}),
		LoadMismatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchctl_load_count_mismatches_total", Help: "Loads whose row count differs from the batch's request total.",
		}),
		LoadsWithoutOutput: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchctl_loads_without_output_total",
			Help: "Completed batches with answered requests loaded without an output file, after waiting the grace for it.",
		}),
		OutputExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchctl_loads_output_expired_total",
			Help: "Batches whose output files expired before their results were loaded: the results are lost (results_lost_at in the batch-ID table), and the load is not retried.",
		}),
		ShortDownloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchctl_load_short_downloads_total",
			Help: "Downloads of a batch's output and error files that held fewer rows than the batch's request counts, rolled back and downloaded again.",
		}),
		ShortLoads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "batchctl_loads_short_total",
			Help: "Loads committed with fewer rows than the batch's request counts because every download of its files came up short.",
		}),
		CostUSD: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "batchctl_cost_usd_total",
			Help: "USD that loaded batches cost at Batch API prices, by model; batches of a model without a price are not counted.",
		}, []string{"model"}),
	}
	if reg != nil {
		reg.MustRegister(m.CostUSD)
		reg.MustRegister(m.PollCalls, m.PollErrors, m.RowsLoaded, m.LoadDuration, m.Requests, m.LoadMismatches,
			m.LoadsWithoutOutput, m.OutputExpired, m.ShortDownloads, m.ShortLoads, m.BatchDuration,
			&dbCollector{store: s, logger: logger})
	}
	return m
}

// dbCollector reports the batch-ID table, the quotas and the admission queue at scrape time.
type dbCollector struct {
	store  *store.Store
	logger *slog.Logger
}

var (
	batchesDesc  = prometheus.NewDesc("batchctl_batches", "Batches in the batch-ID table by status.", []string{"status"}, nil)
	requestsDesc = prometheus.NewDesc("batchctl_batch_requests",
		"Requests of the batches in the batch-ID table by batch status (request_counts.total; 0 while validating).", []string{"status"}, nil)
	oldestDesc = prometheus.NewDesc("batchctl_oldest_in_flight_seconds",
		"Age of the oldest batch not yet ended; the API expires batches at 86400 (24 h).", nil, nil)
	windowDesc = prometheus.NewDesc("batchctl_completion_window_seconds", "The Batch API's completion window.", nil, nil)

	// Quota admission, per model with a quota or with queued batches.
	queuedBatchesDesc = prometheus.NewDesc("batchctl_queued_batches",
		"Batches waiting in the admission queue for their model's quota.", []string{"model"}, nil)
	queuedTokensDesc = prometheus.NewDesc("batchctl_queued_tokens",
		"Estimated prompt tokens of the batches waiting in the admission queue.", []string{"model"}, nil)
	inflightTokensDesc = prometheus.NewDesc("batchctl_inflight_estimated_tokens",
		"Estimated prompt tokens (uncalibrated) of the model's batches not yet ended and of those being created.", []string{"model"}, nil)
	quotaTokensDesc = prometheus.NewDesc("batchctl_quota_tokens",
		"The model's enqueued-token quota (batchctl quota set); absent for a model without one.", []string{"model"}, nil)
)

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- batchesDesc
	ch <- requestsDesc
	ch <- oldestDesc
	ch <- windowDesc
	ch <- queuedBatchesDesc
	ch <- queuedTokensDesc
	ch <- inflightTokensDesc
	ch <- quotaTokensDesc
}

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, requests, oldest, err := c.store.StatusCounts(ctx)
	if err != nil {
		c.logger.Warn("metrics: read batch counts", "error", err)
		return
	}
	for _, status := range []string{store.StatusValidating, store.StatusInProgress, store.StatusFinalizing, store.StatusCompleted,
		store.StatusFailed, store.StatusExpired, store.StatusCancelling, store.StatusCancelled} {
		ch <- prometheus.MustNewConstMetric(batchesDesc, prometheus.GaugeValue, float64(counts[status]), status)
		ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.GaugeValue, float64(requests[status]), status)
	}
	age := 0.0
	if !oldest.IsZero() {
		age = time.Since(oldest).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age)
	ch <- prometheus.MustNewConstMetric(windowDesc, prometheus.GaugeValue, (24 * time.Hour).Seconds())

	quotas, err := c.store.QuotaReport(ctx)
	if err != nil {
		c.logger.Warn("metrics: read quotas", "error", err)
		return
	}
	for _, q := range quotas {
		ch <- prometheus.MustNewConstMetric(queuedBatchesDesc, prometheus.GaugeValue, float64(q.QueuedBatches), q.Model)
		ch <- prometheus.MustNewConstMetric(queuedTokensDesc, prometheus.GaugeValue, float64(q.QueuedTokens), q.Model)
		ch <- prometheus.MustNewConstMetric(inflightTokensDesc, prometheus.GaugeValue, float64(q.InflightTokens), q.Model)
		if q.TokenLimit > 0 {
			ch <- prometheus.MustNewConstMetric(quotaTokensDesc, prometheus.GaugeValue, float64(q.TokenLimit), q.Model)
		}
	}
}

// Command scalebench measures batchctl at scale for make bench: N batches in flight at once on an emulator (in this
// process, no hourly creation cap), tracked in one Postgres schema and polled by several `batchctl poll` processes
// until every result is loaded; then a results table grown to many rows for the latency of `status` and `results`.
//
// It prints key=value figures on stdout (one line per kind) and a summary on stderr:
//
//   - calls: the API calls the emulator received per refresh round (from one round's start to the next) while every
//     batch was in flight (its own count of GET /v1/batches and GET /v1/batches/{id}, not batchctl's), against
//     ⌈N/100⌉ + 4;
//
//   - poller: each poller's CPU time and peak RSS (the kernel's rusage, what /proc/PID/stat and VmHWM hold at exit),
//     and how many loads it did;
//
//   - lag: from the last batch ending (the API's completed_at) to its rows being loaded, and to all rows loaded;
//
//   - db: EXPLAIN (ANALYZE) of the hot statements in the steady state and at the end, with their index use, and
//     pg_stat_statements' busiest statements when the server has the module loaded; the rates of one Postgres:
//     refresh upserts per second, COPY rows per second, River jobs worked per second;
//
//   - latency: `batchctl status` and the first page (1 000 rows) of `batchctl results --all` in input and in
//     completion order, with N batches and the results table at -rows rows.
//
//     go run ./internal/tools/scalebench -batchctl bin/batchctl            # 10 000 batches, 10 M result rows
//     SCALEBENCH=1000 go run ./internal/tools/scalebench -batchctl bin/batchctl   # a development run
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/internal/tools/benchkit"
	"github.com/batchctl/batchctl/store"
)

const model = "gpt-4o-mini"

type config struct {
	batchctl    string
	batches     int
	per         int
	pollers     int
	phase       time.Duration
	interval    time.Duration
	rows        int64
	firstPage   int
	databaseURL string
	work        string
	schema      string
}

func main() {
	var c config
	size := 10_000
	if v := os.Getenv("SCALEBENCH"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 10 {
			fmt.Fprintf(os.Stderr, "scalebench: SCALEBENCH=%q: want a number of batches ≥ 10\n", v)
			os.Exit(2)
		}
		size = n
	}
	flag.StringVar(&c.batchctl, "batchctl", "bin/batchctl", "the batchctl binary")
	flag.IntVar(&c.batches, "batches", size, "batches in flight at once (env SCALEBENCH)")
	flag.IntVar(&c.per, "per", 20, "requests per batch")
	flag.IntVar(&c.pollers, "pollers", 4, "batchctl poll processes")
	flag.DurationVar(&c.phase, "phase", 0, "each emulator phase (default: long enough for the creation and 8 refresh periods)")
	flag.DurationVar(&c.interval, "interval", 5*time.Second, "the pollers' minimum poll interval: the refresh period")
	flag.Int64Var(&c.rows, "rows", 0, "result rows for the latency figures (default 1 000 per batch: 10 M at 10 000)")
	flag.IntVar(&c.firstPage, "first-page", 1000, "rows of the first page of results")
	flag.Parse()
	if c.rows == 0 {
		c.rows = int64(c.batches) * 1000
	}
	c.databaseURL = os.Getenv("DATABASE_URL")
	if c.databaseURL == "" {
		fmt.Fprintln(os.Stderr, "scalebench: DATABASE_URL is not set")
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "scalebench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "scalebench: "+format+"\n", args...) }

func run(c config) error {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "batchctl-scalebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	c.work = work
	c.schema = fmt.Sprintf("bench_scale_%d", os.Getpid())

	// Creation runs at roughly 1 000 batches a second here; the batches stay in flight for three phases.
	if c.phase == 0 {
		c.phase = max(20*time.Second, time.Duration(c.batches)*time.Millisecond+4*c.interval)
	}
	emu, baseURL, stopEmulator, err := benchkit.Emulator(emulator.Options{PhaseDelay: c.phase, MaxBatchCreatesPerHour: -1,
		DataDir: filepath.Join(work, "emulator"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer stopEmulator()

	env := append(os.Environ(), "OPENAI_API_KEY=bench-key", "OPENAI_BASE_URL="+baseURL,
		"BATCHCTL_SCHEMA="+c.schema, "BATCHCTL_LOG_LEVEL=warn")
	defer benchkit.DropSchema(c.databaseURL, c.schema)
	if out, err := batchctlCmd(c, env, "migrate").CombinedOutput(); err != nil {
		return fmt.Errorf("batchctl migrate: %w: %s", err, out)
	}
	st, err := store.Open(ctx, c.databaseURL, c.schema)
	if err != nil {
		return err
	}
	defer st.Close()
	statements := resetStatements(ctx, st)

	// N batches on one input file of c.per requests, created and tracked as `batchctl submit` does.
	logf("creating and tracking %d batches of %d requests (emulator phase %v, refresh period %v)", c.batches, c.per, c.phase, c.interval)
	created := time.Now()
	ids, err := createBatches(ctx, c, baseURL, st)
	if err != nil {
		return err
	}
	logf("%d batches in flight after %.1f s", len(ids), time.Since(created).Seconds())

	// The pollers, and a sample of the emulator's call counters every sampleEvery.
	logf("starting %d pollers", c.pollers)
	pollersStart := time.Now()
	procs := make([]*exec.Cmd, c.pollers)
	for i := range procs {
		cmd := batchctlCmd(c, env, "poll", "--exit-when-done", "--poll-interval", c.interval.String()+","+(5*c.interval).String(),
			"--sweep-interval", (4 * c.interval).String())
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		procs[i] = cmd
	}
	type sample struct {
		at    time.Time
		calls emulator.Stats
	}
	var (
		samples   []sample
		samplesMu sync.Mutex
		steady    []store.Plan
		done      = make(chan struct{})
		sampled   = make(chan struct{})
	)
	go func() {
		defer close(sampled)
		tick := time.NewTicker(sampleEvery)
		defer tick.Stop()
		explained := false
		for {
			samplesMu.Lock()
			samples = append(samples, sample{at: time.Now(), calls: emu.Stats()})
			samplesMu.Unlock()
			// The hot statements in the steady state: every batch in flight, the pollers at work.
			if !explained && time.Since(pollersStart) > 3*c.interval {
				explained = true
				if p, err := st.ExplainHot(ctx); err == nil {
					steady = p
				} else {
					logf("explain in the steady state: %v", err)
				}
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	usage := make([]*syscall.Rusage, len(procs))
	for i, cmd := range procs {
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("poller %d: %w", i, err)
		}
		usage[i], _ = cmd.ProcessState.SysUsage().(*syscall.Rusage)
	}
	close(done)
	<-sampled
	pollersEnd := time.Now()
	logf("every result loaded %.1f s after the pollers started", pollersEnd.Sub(pollersStart).Seconds())

	pool := st.Pool()
	var firstEnd, lastEnd, lastLoaded, lastsLoad time.Time
	var rows, loaded int64
	if err := pool.QueryRow(ctx, `select min(ended_at), max(ended_at), max(results_loaded_at), count(*) filter (where results_loaded_at is not null),
			(select results_loaded_at from `+c.schema+`.batches order by ended_at desc, batch_id limit 1),
			(select count(*) from `+c.schema+`.results)
		from `+c.schema+`.batches`).Scan(&firstEnd, &lastEnd, &lastLoaded, &loaded, &lastsLoad, &rows); err != nil {
		return err
	}
	if loaded != int64(c.batches) || rows != int64(c.batches*c.per) {
		return fmt.Errorf("%d of %d batches loaded, %d of %d rows", loaded, c.batches, rows, c.batches*c.per)
	}

	// Calls per refresh round while every batch was in flight: from each round's start to the next's (River's
	// attempted_at of the refresh jobs), for the rounds from two periods after the pollers started (the start-up
	// round and its loads' first polls) to the first batch's end. Fixed periods would split a round that starts a
	// little late between two of them (52 and 148 calls for two rounds of 100 in one run).
	starts, err := roundStarts(ctx, st, c.schema)
	if err != nil {
		return err
	}
	callsAt := func(at time.Time) int { // the emulator's count at the last sample at or before at
		i, found := slices.BinarySearchFunc(samples, at, func(s sample, t time.Time) int { return s.at.Compare(t) })
		if !found {
			i = max(i-1, 0)
		}
		return apiCalls(samples[i].calls)
	}
	var perPeriod []int
	for i := 1; i < len(starts); i++ {
		a, b := starts[i-1], starts[i]
		if a.Before(pollersStart.Add(2*c.interval)) || b.After(firstEnd) {
			continue
		}
		perPeriod = append(perPeriod, callsAt(b)-callsAt(a))
	}
	// Where the GETs fell, by refresh period since the pollers started.
	var getsBy []string
	for i, next := 0, pollersStart.Add(c.interval); i < len(samples); next = next.Add(c.interval) {
		before := samples[i].calls.BatchGets
		for i < len(samples) && samples[i].at.Before(next) {
			i++
		}
		if n := samples[min(i, len(samples)-1)].calls.BatchGets - before; n > 0 {
			getsBy = append(getsBy, fmt.Sprintf("%.0f s: %d", next.Sub(pollersStart).Seconds()-c.interval.Seconds(), n))
		}
	}
	logf("GETs by refresh period since the pollers started: %v", getsBy)
	target := (c.batches+99)/100 + 4
	final := emu.Stats()
	if len(perPeriod) == 0 {
		logf("no quiet refresh period was measured: raise -phase")
	}
	maxCalls, meanCalls := 0, 0.0
	for _, n := range perPeriod {
		maxCalls = max(maxCalls, n)
		meanCalls += float64(n) / float64(len(perPeriod))
	}
	fmt.Printf("calls batches=%d periods=%d max=%d mean=%.1f target=%d lists=%d gets=%d downloads=%d period_s=%.0f\n",
		c.batches, len(perPeriod), maxCalls, meanCalls, target, final.BatchLists, final.BatchGets, final.ContentDownloads, c.interval.Seconds())
	logf("API calls per refresh round with %d batches in flight: %v (max %d, target %d); whole run: %d lists, %d GETs, %d downloads",
		c.batches, perPeriod, maxCalls, target, final.BatchLists, final.BatchGets, final.ContentDownloads)

	// Each poller's CPU, peak RSS and loads.
	loadsBy, err := loadsByPoller(ctx, st, procs)
	if err != nil {
		return err
	}
	share := float64(c.batches) / float64(c.pollers)
	minLoads, maxLoads := math.MaxInt, 0
	for i, u := range usage {
		cpu := time.Duration(u.Utime.Nano() + u.Stime.Nano())
		fmt.Printf("poller i=%d cpu_s=%.1f rss_mib=%.1f loads=%d share=%.2f\n", i+1, cpu.Seconds(), float64(u.Maxrss)/1024, loadsBy[i], float64(loadsBy[i])/share)
		minLoads, maxLoads = min(minLoads, loadsBy[i]), max(maxLoads, loadsBy[i])
	}
	fmt.Printf("spread pollers=%d min_loads=%d max_loads=%d max_share=%.2f\n", c.pollers, minLoads, maxLoads, float64(maxLoads)/share)

	lag := lastsLoad.Sub(lastEnd)
	loadSpan := lastLoaded.Sub(firstEnd)
	fmt.Printf("lag last_batch_s=%.1f all_loaded_s=%.1f load_span_s=%.1f loads_per_s=%.0f run_s=%.0f\n",
		lag.Seconds(), lastLoaded.Sub(lastEnd).Seconds(), loadSpan.Seconds(), float64(c.batches)/loadSpan.Seconds(), pollersEnd.Sub(pollersStart).Seconds())
	logf("last batch ended → its rows loaded: %.1f s; → every row loaded: %.1f s; %d loads in %.1f s", lag.Seconds(),
		lastLoaded.Sub(lastEnd).Seconds(), c.batches, loadSpan.Seconds())

	endPlans, err := st.ExplainHot(ctx)
	if err != nil {
		return err
	}
	printPlans("steady", steady)
	printPlans("end", endPlans)
	printStatements(ctx, st, statements, pollersEnd.Sub(pollersStart), c.interval)

	if err := dbRates(ctx, c, st, ids); err != nil {
		return err
	}
	return latency(ctx, c, env, st, ids)
}

func batchctlCmd(c config, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(c.batchctl, args...)
	cmd.Env = env
	return cmd
}

// apiCalls are the calls a poller makes to follow batches: list and GET.
func apiCalls(st emulator.Stats) int { return st.BatchLists + st.BatchGets }

// sampleEvery is how often the emulator's call counters are sampled: fine enough to split the calls at each round's
// start.
const sampleEvery = 100 * time.Millisecond

// roundStarts returns when the completed bulk refresh rounds started, in order.
func roundStarts(ctx context.Context, st *store.Store, schema string) ([]time.Time, error) {
	rows, err := st.Pool().Query(ctx, `select attempted_at from `+schema+`.river_job
		where kind = 'batchctl_refresh' and state = 'completed' and attempted_at is not null order by attempted_at`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[time.Time])
}

// createBatches uploads one input file, creates c.batches batches on it and tracks each, 16 at a time.
func createBatches(ctx context.Context, c config, baseURL string, st *store.Store) ([]string, error) {
	var body bytes.Buffer
	for i := range c.per {
		fmt.Fprintf(&body, `{"custom_id":"req-%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"review number %d is great"}]}}`+"\n", i+1, model, i+1)
	}
	fileID, err := upload(ctx, baseURL, body.Bytes())
	if err != nil {
		return nil, err
	}
	ids := make([]string, c.batches)
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= c.batches {
					return
				}
				id, err := createBatch(ctx, baseURL, fileID)
				if err == nil {
					_, err = st.TrackBatch(ctx, store.Batch{BatchID: id, Status: store.StatusValidating,
						Endpoint: "/v1/chat/completions", InputFileID: fileID, Source: "scalebench", Provider: "openai"})
				}
				if err != nil {
					errOnce.Do(func() { first = err })
					return
				}
				ids[i] = id
			}
		})
	}
	wg.Wait()
	return ids, first
}

var httpClient = &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}

func upload(ctx context.Context, baseURL string, data []byte) (string, error) {
	var buf bytes.Buffer
	boundary := "scalebenchboundary"
	fmt.Fprintf(&buf, "--%s\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n", boundary)
	fmt.Fprintf(&buf, "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n", boundary)
	buf.Write(data)
	fmt.Fprintf(&buf, "\r\n--%s--\r\n", boundary)
	return post(ctx, baseURL+"/files", "multipart/form-data; boundary="+boundary, buf.Bytes())
}

func createBatch(ctx context.Context, baseURL, fileID string) (string, error) {
	body, _ := json.Marshal(map[string]string{"input_file_id": fileID, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
	return post(ctx, baseURL+"/batches", "application/json", body)
}

// post sends a call to the emulator and returns the id of the object it answers.
func post(ctx context.Context, url, contentType string, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer bench-key")
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	var obj struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &obj) != nil || obj.ID == "" {
		return "", fmt.Errorf("POST %s: %s: %s", url, resp.Status, raw)
	}
	return obj.ID, nil
}

// loadsByPoller counts the completed load jobs of each poller process, by the pid in its River client ID
// (host_pid_random).
func loadsByPoller(ctx context.Context, st *store.Store, procs []*exec.Cmd) ([]int, error) {
	rows, err := st.Pool().Query(ctx, `select attempted_by[array_length(attempted_by, 1)], count(*)
		from `+st.Schema()+`.river_job where kind = $1 and state = 'completed' group by 1`, store.LoadResultsArgs{}.Kind())
	if err != nil {
		return nil, err
	}
	out := make([]int, len(procs))
	var (
		client string
		n      int
	)
	_, err = pgx.ForEachRow(rows, []any{&client, &n}, func() error {
		for i, p := range procs {
			if strings.Contains(client, "_"+strconv.Itoa(p.Process.Pid)+"_") {
				out[i] += n
			}
		}
		return nil
	})
	return out, err
}

func printPlans(when string, plans []store.Plan) {
	for _, p := range plans {
		seq := strings.Contains(p.Text, "Seq Scan on batches") || strings.Contains(p.Text, "Seq Scan on results")
		indexes := map[string]bool{}
		for _, l := range strings.Split(p.Text, "\n") {
			if _, after, ok := strings.Cut(l, " using "); ok {
				indexes[strings.Fields(after)[0]] = true
			}
		}
		names := slices.Sorted(func(yield func(string) bool) {
			for k := range indexes {
				if !yield(k) {
					return
				}
			}
		})
		key := strings.NewReplacer(": ", "_", " ", "_").Replace(p.Name)
		fmt.Printf("plan when=%s stmt=%s ms=%.2f seq_scan=%t indexes=%s\n", when, key, p.Millis, seq, strings.Join(names, ","))
		logf("EXPLAIN ANALYZE, %s, %s:\n%s", when, p.Name, p.Text)
	}
}

// resetStatements resets pg_stat_statements when the server has it loaded; it reports whether it has.
func resetStatements(ctx context.Context, st *store.Store) bool {
	pool := st.Pool()
	if _, err := pool.Exec(ctx, `create extension if not exists pg_stat_statements`); err != nil {
		logf("pg_stat_statements not available (%v): EXPLAIN ANALYZE only", err)
		return false
	}
	if _, err := pool.Exec(ctx, `select pg_stat_statements_reset()`); err != nil {
		logf("pg_stat_statements not loaded (shared_preload_libraries): EXPLAIN ANALYZE only (%v)", err)
		return false
	}
	return true
}

// printStatements prints the statements of the run that took the most database time, per refresh period.
func printStatements(ctx context.Context, st *store.Store, have bool, run, period time.Duration) {
	if !have {
		fmt.Println("statements available=false")
		return
	}
	rows, err := st.Pool().Query(ctx, `select calls, total_exec_time, left(regexp_replace(query, '\s+', ' ', 'g'), 90)
		from pg_stat_statements where query ilike '%`+st.Schema()+`%' order by total_exec_time desc limit 8`)
	if err != nil {
		logf("read pg_stat_statements: %v", err)
		return
	}
	periods := run.Seconds() / period.Seconds()
	var (
		calls int64
		ms    float64
		q     string
		total float64
	)
	_, _ = pgx.ForEachRow(rows, []any{&calls, &ms, &q}, func() error {
		total += ms
		logf("pg_stat_statements: %8d calls %10.0f ms (%.0f ms a period)  %s", calls, ms, ms/periods, q)
		return nil
	})
	fmt.Printf("statements available=true top8_ms_per_period=%.0f\n", total/periods)
}

// dbRates measures the rates of one Postgres that bound a poller fleet: refresh upserts (UpsertBatches, pages of
// 100 changed batches) and touches per second, on the run's batches.
func dbRates(ctx context.Context, c config, st *store.Store, ids []string) error {
	rows := make([]store.Batch, len(ids))
	for i, id := range ids {
		rows[i] = store.Batch{BatchID: id, Status: store.StatusCompleted, RequestTotal: c.per, RequestCompleted: c.per - 1, RequestFailed: 1}
	}
	start := time.Now()
	for p := 0; p < len(rows); p += 100 {
		if _, err := st.UpsertBatches(ctx, rows[p:min(p+100, len(rows))]); err != nil {
			return err
		}
	}
	upserts := float64(len(rows)) / time.Since(start).Seconds()
	start = time.Now()
	for p := 0; p < len(ids); p += 100 {
		if err := st.TouchBatches(ctx, ids[p:min(p+100, len(ids))]); err != nil {
			return err
		}
	}
	touches := float64(len(ids)) / time.Since(start).Seconds()
	fmt.Printf("rates upserts_per_s=%.0f touches_per_s=%.0f\n", upserts, touches)
	logf("refresh writes: %.0f changed batches/s (UpsertBatches pages of 100), %.0f unchanged/s (TouchBatches)", upserts, touches)
	return nil
}

// latency grows the results table to c.rows rows (COPY for a tenth, timed; an insert from generate_series for the
// rest), then times `batchctl status` and the first page of `batchctl results --all` in both orders.
func latency(ctx context.Context, c config, env []string, st *store.Store, ids []string) error {
	pool := st.Pool()
	var have int64
	if err := pool.QueryRow(ctx, `select count(*) from `+c.schema+`.results`).Scan(&have); err != nil {
		return err
	}
	extra := c.rows - have
	perBatch := extra / int64(len(ids))
	copyRows := min(extra/10, 1_000_000)
	logf("growing the results table from %d to %d rows (COPY of %d rows, then insert ... select generate_series)", have, c.rows, copyRows)
	// Each batch's rows carry its own load time, as a load writes them: an export in completion order sorts one
	// load's rows at a time, and ten million rows of one load time would be one sort.
	loadedAt := make(map[string]time.Time, len(ids))
	lrows, err := pool.Query(ctx, `select batch_id, results_loaded_at from `+c.schema+`.batches`)
	if err != nil {
		return err
	}
	var (
		lid string
		lat time.Time
	)
	if _, err := pgx.ForEachRow(lrows, []any{&lid, &lat}, func() error {
		loadedAt[lid] = lat
		return nil
	}); err != nil {
		return err
	}
	body := []byte(`{"id":"chatcmpl-x","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"positive"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}`)
	var n int64
	start := time.Now()
	copied, err := pool.CopyFrom(ctx, pgx.Identifier{c.schema, "results"},
		[]string{"batch_id", "custom_id", "input_line", "status_code", "response", "loaded_at"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if n >= copyRows {
				return nil, nil
			}
			b, k := ids[n%int64(len(ids))], n/int64(len(ids))
			n++
			return []any{b, "x-" + strconv.FormatInt(k, 10), int(k) + c.per + 1, 200, string(body), loadedAt[b]}, nil
		}))
	if err != nil {
		return fmt.Errorf("copy result rows: %w", err)
	}
	copyRate := float64(copied) / time.Since(start).Seconds()
	start = time.Now()
	if _, err := pool.Exec(ctx, `insert into `+c.schema+`.results (batch_id, custom_id, input_line, status_code, response, loaded_at)
		select b.batch_id, 'x-' || k, k + $2 + 1, 200, $3::jsonb, b.results_loaded_at
		from `+c.schema+`.batches b, generate_series($1::bigint, $4::bigint - 1) k`, copyRows/int64(len(ids)), c.per, string(body), perBatch); err != nil {
		return fmt.Errorf("insert result rows: %w", err)
	}
	insertSecs := time.Since(start).Seconds()
	if _, err := pool.Exec(ctx, `analyze `+c.schema+`.results`); err != nil {
		return err
	}
	var total int64
	if err := pool.QueryRow(ctx, `select count(*) from `+c.schema+`.results`).Scan(&total); err != nil {
		return err
	}
	fmt.Printf("copy rows=%d copy_rows_per_s=%.0f insert_rows_per_s=%.0f total_rows=%d\n", copied, copyRate, float64(total-have-copied)/insertSecs, total)
	logf("COPY %.0f rows/s; insert from generate_series %.0f rows/s; the table holds %d rows", copyRate, float64(total-have-copied)/insertSecs, total)

	grown, err := st.ExplainHot(ctx)
	if err != nil {
		return err
	}
	printPlans("grown", grown)

	status, err := timeRun(c, env, 0, "status")
	if err != nil {
		return err
	}
	input, err := timeRun(c, env, c.firstPage, "results", "--all")
	if err != nil {
		return err
	}
	completion, err := timeRun(c, env, c.firstPage, "results", "--all", "--order", "completion")
	if err != nil {
		return err
	}
	one, err := timeRun(c, env, 0, "results", ids[len(ids)/2])
	if err != nil {
		return err
	}
	fmt.Printf("latency batches=%d rows=%d status_s=%.3f results_input_s=%.3f results_completion_s=%.3f results_one_batch_s=%.3f first_page=%d\n",
		len(ids), total, status.Seconds(), input.Seconds(), completion.Seconds(), one.Seconds(), c.firstPage)
	logf("with %d batches and %d rows: status %.3f s; first %d rows of results --all: %.3f s in input order, %.3f s in completion order; results of one batch %.3f s",
		len(ids), total, status.Seconds(), c.firstPage, input.Seconds(), completion.Seconds(), one.Seconds())
	return nil
}

// timeRun times batchctl args until it exits, or, for lines > 0, until it has written that many lines (then it is
// killed: the first page of a long export).
func timeRun(c config, env []string, lines int, args ...string) (time.Duration, error) {
	cmd := batchctlCmd(c, env, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	br := bufio.NewReaderSize(out, 1<<20)
	got := 0
	for lines == 0 || got < lines {
		if _, err := br.ReadSlice('\n'); err != nil {
			if err == bufio.ErrBufferFull {
				continue
			}
			break
		}
		got++
	}
	took := time.Since(start)
	if lines > 0 && got >= lines {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return took, nil
	}
	_, _ = io.Copy(io.Discard, br)
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("batchctl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	if lines > 0 {
		return 0, fmt.Errorf("batchctl %s wrote %d lines, want %d", strings.Join(args, " "), got, lines)
	}
	return took, nil
}

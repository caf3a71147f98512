package reliability_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchctl/batchctl/emulator"
	"github.com/batchctl/batchctl/submit"
)

// A submission of the submit crash runs: 1 000 records in 20 batches of 50.
const (
	submitRecords   = 1000
	submitPerBatch  = 50
	submitBatches   = submitRecords / submitPerBatch
	submitRecordPad = 60
)

// killMoment is where in a submission a submit crash lands. The upload moments have no place in a submission to
// Anthropic, which uploads nothing; submitPlan.at maps them to the create.
type killMoment string

const (
	// momentSpooling kills within the first milliseconds: reading, checking and spooling, before any upload.
	momentSpooling killMoment = "spooling"
	// momentUploadInFlight kills while an upload is on the wire and the API has not stored it.
	momentUploadInFlight killMoment = "upload in flight"
	// momentUploadAnswerLost kills after the API stored an upload, before its answer arrived.
	momentUploadAnswerLost killMoment = "upload stored, answer lost"
	// momentBeforeCreate kills after an upload's answer, while the create call is in flight and not yet handled.
	momentBeforeCreate killMoment = "create in flight"
	// momentCreateAnswerLost kills after the API created a batch, before its answer arrived: the hard case, which
	// only reconciling with the batch list can get right.
	momentCreateAnswerLost killMoment = "batch created, answer lost"
	// momentAfterCreate kills within 2 ms after a create's answer: journaling the batch, removing the spool file,
	// printing its line.
	momentAfterCreate killMoment = "right after create"
	// momentRandom kills after a random delay within a run's usual length.
	momentRandom killMoment = "random"
)

var killMoments = []killMoment{momentSpooling, momentUploadInFlight, momentUploadAnswerLost, momentBeforeCreate,
	momentCreateAnswerLost, momentAfterCreate, momentRandom}

// testSubmitKills runs submissions of a file that are killed with SIGKILL at one or more moments and then run again
// until they succeed, against each API; the emulator's batches must hold every record exactly once. The short form
// runs a fixed plan for each API, the three covering every moment between them; the full form runs at least 10
// submissions against each with 1 to 3 kills each, the first kill cycling through the moments, the others random.
// Some runs have a database configured, so batches are also tracked as they are created: a batch created by a
// killed run must be tracked by the next. A stream is read once, so a rerun of it is new input: streams have their
// own part, StreamStops.
func testSubmitKills(t *testing.T, tl *tally) {
	var plans []submitPlan
	if !full {
		plans = []submitPlan{
			{api: openAIAPI, seed: 1, moments: []killMoment{momentCreateAnswerLost, momentSpooling, momentUploadInFlight}, db: true},
			{api: azureAPI, seed: 2, moments: []killMoment{momentBeforeCreate, momentUploadAnswerLost}, faults: true},
			{api: anthropicAPI, seed: 3, moments: []killMoment{momentCreateAnswerLost, momentAfterCreate, momentRandom}, db: true},
		}
	} else {
		base := uint64(time.Now().UnixNano())
		if s, err := strconv.ParseUint(os.Getenv("BATCHCTL_RELIABILITY_SEED"), 10, 64); err == nil {
			base = s
		}
		t.Logf("seed %d (BATCHCTL_RELIABILITY_SEED repeats it)", base)
		// 30 plans: each API every third, so the first moments (cycling by 7) meet every API; a database and faults
		// in groups of three plans, one of each API.
		for i := range 30 {
			rng := rand.New(rand.NewPCG(base, uint64(i)))
			p := submitPlan{api: apis[i%len(apis)], seed: base + uint64(i), moments: []killMoment{killMoments[i%len(killMoments)]},
				db: i/len(apis)%2 == 1, faults: i/len(apis)%3 == 0}
			for range rng.IntN(3) {
				p.moments = append(p.moments, killMoments[rng.IntN(len(killMoments))])
			}
			plans = append(plans, p)
		}
	}
	// Two submissions at once: each is mostly waiting on fsync and on its own emulator.
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for i, p := range plans {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			t.Run(fmt.Sprintf("%s/run%02d", p.api.name, i+1), func(t *testing.T) { submitKillRun(t, tl, p) })
		})
	}
	wg.Wait()
	for i, a := range apis {
		t.Run(a.name+"/concurrent", func(t *testing.T) { testConcurrentSubmits(t, tl, a, int64(11+i)) })
	}
}

// submitPlan is one submit crash run.
type submitPlan struct {
	api     api
	seed    uint64
	moments []killMoment
	db      bool // with DATABASE_URL: batches are also tracked as they are created
	faults  bool // the API also answers 10 % of calls 500 and cuts 10 % after they took effect
}

// at is the moment of m that the plan's API has. An API without uploads (Anthropic) sends the requests in the
// create call: an upload in flight is a create in flight, and an upload stored with its answer lost is a batch
// created with its answer lost.
func (p submitPlan) at(m killMoment) killMoment {
	if !p.api.inline() {
		return m
	}
	switch m {
	case momentUploadInFlight:
		return momentBeforeCreate
	case momentUploadAnswerLost:
		return momentCreateAnswerLost
	}
	return m
}

func submitKillRun(t *testing.T, tl *tally, p submitPlan) {
	seed, db := p.seed, p.db
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	e := newAPIEnv(t, p.api, emulator.Options{Seed: int64(seed)})
	if db {
		e.withDB(t)
	}
	if p.faults {
		e.emu.SetFaults(emulator.Faults{HTTP500Rate: 0.1, ResetRate: 0.1})
	}
	// Odd seeds give the records IDs with a dot, which Anthropic does not take: those runs send r<line> instead.
	prefix := fmt.Sprintf("s%d", seed)
	if seed%2 == 1 {
		prefix += ".x"
	}
	_, ids := writeRecords(t, e.dir, "records.jsonl", prefix, submitRecords, submitRecordPad)
	args := e.submitArgs("records.jsonl", submitPerBatch, "--log-level", "debug")
	start := time.Now()
	var hit []string
	for _, planned := range p.moments {
		m := p.at(planned)
		name := string(m)
		if m != planned {
			name = fmt.Sprintf("%s (for %s)", m, planned)
		}
		killed, pr := submitKillAt(t, tl, e, args, m, rng)
		if !killed {
			require.Equal(t, 0, pr.code, "a run that was not killed succeeds; stderr:\n%s", tail(pr.stderr.String(), 4000))
			hit = append(hit, name+" (finished first)")
			continue
		}
		hit = append(hit, name)
	}
	final := e.run(t, tl, args...)
	require.Equal(t, 0, final.code, "the run after the kills succeeds; stderr:\n%s", tail(final.stderr.String(), 4000))
	batches := checkSubmitted(t, tl, e, ids, submitBatches)

	// The last run prints every batch of the submission once, whichever run created it.
	var printed []string
	for _, l := range strings.Split(strings.TrimSpace(final.stdout.String()), "\n") {
		var c submit.Created
		require.NoError(t, json.Unmarshal([]byte(l), &c), "stdout line %q", l)
		require.Equal(t, p.api.name, c.Provider, "stdout line %q", l)
		printed = append(printed, c.BatchID)
	}
	var created []string
	for _, b := range batches {
		created = append(created, b.id)
	}
	require.ElementsMatch(t, created, printed, "the final run prints each batch once")
	if db {
		// A batch created by a run killed before it was recorded is recorded by the next run.
		require.Equal(t, len(created), e.count(t, `select count(*) from $schema.batches where batch_id = any($1) and provider = $2`,
			created, p.api.name), "every batch is tracked, with its provider")
		require.Equal(t, len(created), e.count(t, `select count(*) from $schema.batches`), "no other batch is tracked")
		require.Equal(t, len(created), e.count(t, `select count(distinct args->>'batch_id') from $schema.river_job
			where kind = 'batchctl_poll_batch'`), "every batch has its poll job")
	}
	tl.faults.Add(injected(e.emu.Stats()))
	t.Logf("%+v: kills at %s; %d records in %d batches, each once; %d uploads, %d create calls for %d batches; %s",
		struct{ DB, Faults bool }{db, p.faults}, strings.Join(hit, ", "), len(ids), len(batches), e.uploads(), e.createCalls(),
		len(batches), time.Since(start).Round(time.Millisecond))
}

// submitKillAt starts a submission and kills it at moment m. It returns false with the finished process when the
// submission ended before the moment came (a rerun with little left to do).
func submitKillAt(t *testing.T, tl *tally, e *env, args []string, m killMoment, rng *rand.Rand) (bool, *proc) {
	t.Helper()
	left := submitBatches - e.made() // batches this run may still create
	if left < 1 {
		left = 1
	}
	nth := 1 + rng.IntN(left)
	var hit <-chan struct{}
	switch m {
	case momentUploadInFlight:
		hit = e.trap.arm(http.MethodPost, e.api.uploadPath, nth, false)
	case momentUploadAnswerLost:
		hit = e.trap.arm(http.MethodPost, e.api.uploadPath, nth, true)
	case momentBeforeCreate:
		hit = e.trap.arm(http.MethodPost, e.api.createPath, nth, false)
	case momentCreateAnswerLost:
		hit = e.trap.arm(http.MethodPost, e.api.createPath, nth, true)
	}
	made, uploads := e.made(), e.uploads()
	p := e.start(t, tl, args...)
	defer e.trap.disarm()
	switch m {
	case momentSpooling:
		time.Sleep(time.Duration(rng.IntN(30_000)) * time.Microsecond)
	case momentAfterCreate:
		waitFor(t, "a batch created", func() bool { return e.made() >= made+nth || p.exited() })
		time.Sleep(time.Duration(rng.IntN(2_000)) * time.Microsecond)
	case momentRandom:
		time.Sleep(time.Duration(rng.IntN(150_000)) * time.Microsecond)
	default:
		select {
		case <-hit:
		case <-p.done:
		case <-time.After(eventTimeout):
			t.Fatalf("the call to hold at %q never came; stderr:\n%s", m, tail(p.stderr.String(), 4000))
		}
	}
	uploaded := e.uploads() > uploads || e.made() > made
	killed := p.kill(tl)
	if killed && m == momentSpooling && uploaded {
		t.Logf("the kill meant for %q came after the first upload or create", m)
	}
	return killed, p
}

// testConcurrentSubmits starts the same submission in three processes at once, kills one of them, and finishes with
// one more run: the run directory's lock lets one work while the others fail or wait, and every record is in exactly
// one batch.
func testConcurrentSubmits(t *testing.T, tl *tally, a api, seed int64) {
	e := newAPIEnv(t, a, emulator.Options{Seed: seed})
	_, ids := writeRecords(t, e.dir, "records.jsonl", "c", submitRecords, submitRecordPad)
	args := e.submitArgs("records.jsonl", submitPerBatch)
	var ps []*proc
	for range 3 {
		ps = append(ps, e.start(t, tl, args...))
	}
	waitFor(t, "a batch created", func() bool { return e.made() > 2 || ps[0].exited() })
	ps[0].kill(tl)
	var codes []int
	for _, p := range ps[1:] {
		codes = append(codes, p.wait(t, commandTimeout))
	}
	final := e.run(t, tl, args...)
	require.Equal(t, exitOK, final.code, final.stderr.String())
	checkSubmitted(t, tl, e, ids, submitBatches)
	t.Logf("concurrent submitters exited %v; the last run finished the submission", codes)
}

// testManySubmitters runs 8 submitters on distinct inputs and 2 on one shared input at the same moment, against one
// emulator and one database, then the shared input's command once more: every record of every input is in exactly
// one batch, and every batch is tracked once. The shared input's two runs meet on its run directory's lock: one
// works, the other stops without creating anything (or finds the work done).
func testManySubmitters(t *testing.T, tl *tally) {
	const distinct, perInput = 8, 500
	e := newEnv(t, emulator.Options{Seed: 12}).withDB(t)
	var ids []string
	var ps []*proc
	argsFor := func(file string) []string {
		return []string{"submit", "--model", "gpt-4o-mini", "--id-field", "id", "--max-requests", strconv.Itoa(submitPerBatch), file}
	}
	for i := range distinct {
		name := fmt.Sprintf("in%d.jsonl", i)
		_, more := writeRecords(t, e.dir, name, fmt.Sprintf("m%d", i), perInput, submitRecordPad)
		ids = append(ids, more...)
	}
	_, shared := writeRecords(t, e.dir, "shared.jsonl", "shared", perInput, submitRecordPad)
	ids = append(ids, shared...)
	for i := range distinct {
		ps = append(ps, e.start(t, tl, argsFor(fmt.Sprintf("in%d.jsonl", i))...))
	}
	ps = append(ps, e.start(t, tl, argsFor("shared.jsonl")...), e.start(t, tl, argsFor("shared.jsonl")...))
	for i, p := range ps {
		code := p.wait(t, commandTimeout)
		if i < distinct {
			require.Equal(t, exitOK, code, "submitter %d; stderr:\n%s", i, tail(p.stderr.String(), 4000))
		}
	}
	final := e.run(t, tl, argsFor("shared.jsonl")...)
	require.Equal(t, exitOK, final.code, final.stderr.String())
	batches := checkSubmitted(t, tl, e, ids, (distinct+1)*perInput/submitPerBatch)
	var created []string
	for _, b := range batches {
		created = append(created, b.id)
	}
	require.Equal(t, len(created), e.count(t, `select count(*) from $schema.batches where batch_id = any($1)`, created),
		"every batch is tracked")
	require.Equal(t, len(created), e.count(t, `select count(*) from $schema.batches`), "no other batch is tracked")
	t.Logf("%d submitters at once: %d records in %d batches, each once", len(ps), len(ids), len(batches))
}

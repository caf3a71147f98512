#!/usr/bin/env bash
# make bench: batchctl's performance figures, each set against a limit measured in the same run on the same machine.
#
# It generates its own data (internal/tools/benchgen, deterministic), runs bin/batchctl against `batchctl emulator`
# processes and the Postgres in DATABASE_URL (make bench runs it under internal/tools/withpg, which starts a
# throwaway cluster when DATABASE_URL is unset), and measures with public tools only: /usr/bin/time (peak RSS),
# cp, psql \copy and a Go benchmark. Progress goes to stderr; the table (Markdown) goes to stdout.
#
#   BENCH_SCALE=0.01 scripts/bench.sh      # a quick smoke run on 1 % of the data (default 1)
#   BENCH_DIR=/mnt/fast scripts/bench.sh   # where the temporary files go (default /tmp; about 6 GB at scale 1)
#   BENCH_RUNS=5                           # runs of the spool timings, median reported (default 5)
#   BENCH_LOAD_RUNS=3                      # runs of each side of the load figure, medians compared (default 3)
#   BENCH_ONLY=load scripts/bench.sh       # only these stages (comma-separated: spool, load, round, e2e, submit, quota, cut,
#                                          # pack, scale, webhook);
#                                          # prints their raw figures instead of the table
#
# The figures:
#   1. spool throughput: `submit --dry-run` of 1 000 000 chat request lines vs `cp --reflink=never` of the same file
#   2. results load: `poll` loading one 1 000 000-line batch vs `psql \copy` of the same rows into a twin table
#   3. peak RSS of a real `submit` of ≥ 1 GiB of records (several 200 MB batches) against the emulator
#   4. peak RSS of the 1 000 000-line load of figure 2
#   5. API calls of one poll round with 1 000 batches in flight (BenchmarkRefreshRound) vs one GET per batch
#   6. end to end: 1 000 000 records from input file to result rows (submit, then poll) vs cp + psql \copy of them
#   7. quota admission: 20 batches whose tokens pass the model's enqueued-token limit 4× (internal/tools/quotabench),
#      with `batchctl quota` vs without (fail, back off, resubmit): failures, makespan vs the ideal packing, peak
#   8. the load of figure 2 through a connection cut every 100 MB (internal/tools/cutproxy; BENCH_CUT_EVERY bytes)
#      vs the same load uncut: each cut download resumes with a Range request
#   9. prompt packing: prompt tokens and estimated cost per record of the demo's 3 000 reviews (examples/reviews.jsonl)
#      unpacked against `submit --pack 10` and `--pack 50` (submit's own estimate, from `submit --dry-run`)
#  10. scale: 10 000 batches in flight on one Postgres with 4 `batchctl poll` processes (internal/tools/scalebench;
#      SCALEBENCH=1000 for a smaller run): API calls per refresh round, each poller's CPU and RSS, the spread of
#      loads, the end-to-load lag, the hot statements' plans, and `status` / `results` latency at 10 M result rows
#  11. webhooks: delay from a batch's end to its rows loaded, with OpenAI's webhooks sent to `batchctl serve` vs
#      polling alone at the default interval (internal/tools/webhookbench)
# Everything it creates (schemas bench_<pid>*, emulator processes, the work directory) is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

batchctl=$root/${BATCHCTL:-bin/batchctl}
go=${GO:-go}
scale=${BENCH_SCALE:-1}
runs=${BENCH_RUNS:-5}
load_runs=${BENCH_LOAD_RUNS:-3}
schema=bench_$$
e2e_schema=${schema}_e2e
rss_limit_mib=64
only=${BENCH_ONLY:-}
want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ -n "${DATABASE_URL:-}" ] || die "DATABASE_URL is not set; run 'make bench' (it starts a throwaway Postgres) or set it"
[ -x "$batchctl" ] || die "$batchctl not found; run 'make build' first"
command -v psql >/dev/null || die "psql not found (Debian/Ubuntu: apt-get install postgresql-client)"
if [ ! -x /usr/bin/time ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    log "installing GNU time (/usr/bin/time) with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
  else
    die "/usr/bin/time (GNU time) not found (Debian/Ubuntu: apt-get install time)"
  fi
fi

count() { awk -v s="$scale" -v n="$1" -v lo="$2" 'BEGIN { c = int(n * s + 0.5); if (c < lo) c = lo; print c }'; }
n=$(count 1000000 1000)            # requests, result lines and records of figures 1, 2, 4, 6
big_records=$(count 215000 500)    # records of about 5 KB: ≥ 1 GiB at scale 1 (figure 3)

work=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/batchctl-bench.XXXXXX")
emulator_pids=()
cleanup() {
  status=$?
  for pid in "${emulator_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for s in $(psql "$DATABASE_URL" -qtAX -c "select nspname from pg_namespace where nspname like '${schema}%'" 2>/dev/null); do
    psql "$DATABASE_URL" -qX -c "drop schema if exists $s cascade" >/dev/null 2>&1 || true
  done
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers ----------------------------------------------------------------------------------------------------

# timed NAME CMD...: run CMD under /usr/bin/time; its wall time (s) and peak RSS (KiB) land in $work/NAME.time.
# timed NAME CMD...: runs CMD and writes "$work/NAME.time": seconds, peak RSS (KiB, /usr/bin/time's maximum resident
# set size, which counts the pages of the binary mapped from the page cache) and peak anonymous RSS (KiB, RssAnon
# of /proc/PID/status sampled every 50 ms: the process's own memory, heap and stacks, without the binary's pages).
timed() {
  local name=$1
  shift
  local t0 t1 tp rc=0 anon=0 kids kid key val _
  t0=$(date +%s%N)
  /usr/bin/time -f '%M' -o "$work/$name.rss" "$@" &
  tp=$!
  while kill -0 "$tp" 2>/dev/null; do
    kids=
    read -r kids _ <"/proc/$tp/task/$tp/children" 2>/dev/null || true
    for kid in $kids; do
      while read -r key val _; do
        if [ "$key" = RssAnon: ] && [ "$val" -gt "$anon" ]; then anon=$val; fi
      done <"/proc/$kid/status" 2>/dev/null || true
    done
    sleep 0.05
  done
  wait "$tp" || rc=$?
  t1=$(date +%s%N)
  echo "$(( (t1 - t0) / 1000 )) $(tail -n 1 "$work/$name.rss") $anon" | awk '{ printf "%.6f %d %d\n", $1 / 1e6, $2, $3 }' \
    >"$work/$name.time"
  return "$rc"
}
secs() { awk '{ print $1 }' "$work/$1.time"; }
rss_kib() { awk '{ print $2 }' "$work/$1.time"; }
anon_kib() { awk '{ print $3 }' "$work/$1.time"; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
size_mb() { calc '%.0f' "$(stat -c %s "$1") / 1e6"; }
psql_q() { psql "$DATABASE_URL" -qtAX -v ON_ERROR_STOP=1 "$@"; }
fmt_runs() { printf '%s\n' "$@" | awk '{ printf "%s%.1f", (NR > 1 ? ", " : ""), $1 }'; }

# start_emulator NAME ARGS...: start `batchctl emulator` on a free port; sets $base_url.
start_emulator() {
  local name=$1
  shift
  "$batchctl" emulator --addr 127.0.0.1:0 --data-dir "$work/$name" "$@" >"$work/$name.out" 2>"$work/$name.log" &
  emulator_pids+=($!)
  local pid=$!
  for _ in $(seq 200); do
    grep -q base_url "$work/$name.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/$name.log" >&2; die "emulator $name exited"; }
    sleep 0.05
  done
  base_url=$(sed -n 's/.*"base_url":"\([^"]*\)".*/\1/p' "$work/$name.out" | head -n 1)
  [ -n "$base_url" ] || die "emulator $name printed no base_url"
  emulator_pid=$pid
}
stop_emulator() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

api() { curl -sS --fail-with-body -H "Authorization: Bearer bench-key" "$@"; }
json_field() { sed -n "s/^{\"id\":\"\([^\"]*\)\".*/\1/p" | head -n 1; }

# export_rows SCHEMA FILE: write SCHEMA.results, as text, to FILE.
cols="batch_id, custom_id, input_line, status_code, response, error"
export_rows() { psql_q -c "\\copy (select $cols from $1.results) to '$2'"; }

# copy_twin SCHEMA NAME FILE: time psql \copy of FILE into an empty twin of SCHEMA.results, with the same columns,
# defaults and indexes (the limit of a load), after a checkpoint as before each load.
copy_twin() {
  local s=$1 name=$2 file=$3
  psql_q -c "create table $s.results_twin (like $s.results including all)"
  psql_q -c checkpoint >/dev/null 2>&1 || true # superuser only; evens out the WAL both loads start from
  sync
  timed "$name" psql "$DATABASE_URL" -qX -v ON_ERROR_STOP=1 -c "\\copy $s.results_twin($cols) from '$file'"
  [ "$(psql_q -c "select count(*) from $s.results_twin")" -eq "$(wc -l <"$file")" ] ||
    die "the twin table of $s.results did not get every row"
}

# twin_copy SCHEMA NAME: copy_twin of SCHEMA's own rows.
twin_copy() {
  export_rows "$1" "$work/$2.tsv"
  copy_twin "$1" "$2" "$work/$2.tsv"
  rm -f "$work/$2.tsv"
}

# --- setup ------------------------------------------------------------------------------------------------------

log "work directory $work, scale $scale ($n records), schemas $schema and $e2e_schema"
"$go" build -o "$work/benchgen" ./internal/tools/benchgen
gen=$work/benchgen
export OPENAI_API_KEY=bench-key BATCHCTL_LOG_LEVEL=warn
unset BATCHCTL_SCHEMA BATCHCTL_SPOOL_DIR OPENAI_BASE_URL
"$batchctl" --schema "$schema" migrate >/dev/null
"$batchctl" --schema "$e2e_schema" migrate >/dev/null
pg_version=$(psql_q -c 'show server_version')
timed floor "$batchctl" version >/dev/null # the RSS of the binary doing nothing, for the footnote
started=$(date +%s)

# --- 1. spool throughput ----------------------------------------------------------------------------------------

if want spool; then

log "[spool] spool throughput: generating $n chat request lines"
"$gen" requests "$n" >"$work/requests.jsonl"
requests_mb=$(size_mb "$work/requests.jsonl")
cp_times=() dry_times=()
for i in $(seq "$runs"); do
  log "[spool] run $i/$runs: cp --reflink=never, then submit --dry-run ($requests_mb MB)"
  sync
  timed "cp_$i" cp --reflink=never "$work/requests.jsonl" "$work/copy.jsonl"
  rm -f "$work/copy.jsonl"
  sync
  timed "dry_$i" "$batchctl" submit --dry-run --progress never --spool-dir "$work/spool-dry" \
    "$work/requests.jsonl" >"$work/dry.out"
  [ "$(wc -l <"$work/dry.out")" -ge 1 ] || die "submit --dry-run printed no batch"
  rm -rf "$work/spool-dry"
  cp_times+=("$(secs "cp_$i")") dry_times+=("$(secs "dry_$i")")
done
dry_batches=$(wc -l <"$work/dry.out")
cp_s=$(median "${cp_times[@]}")
dry_s=$(median "${dry_times[@]}")
dry_rss=$(rss_kib dry_1)
rm -f "$work/requests.jsonl"
fi

# --- 2. + 4. results load ---------------------------------------------------------------------------------------

if want load || want cut; then

log "[load] results load: generating $n request lines for one batch"
"$gen" requests -text-bytes 200 "$n" >"$work/load.jsonl"
start_emulator emu-load --phase-delay 100ms --max-requests "$((n > 50000 ? n : 50000))" --max-file-mb 600
load_emulator=$emulator_pid
file_id=$(api -F purpose=batch -F "file=@$work/load.jsonl;filename=load.jsonl" "$base_url/files" | json_field)
batch_id=$(api -H 'Content-Type: application/json' \
  -d "{\"input_file_id\":\"$file_id\",\"endpoint\":\"/v1/chat/completions\",\"completion_window\":\"24h\"}" \
  "$base_url/batches" | json_field)
[ -n "$batch_id" ] || die "could not create the load batch"
rm -f "$work/load.jsonl" # the emulator keeps its own copy
log "[load] waiting for the emulator to answer $n requests ($batch_id)"
while :; do
  status=$(api "$base_url/batches/$batch_id" | sed -n 's/.*"status":"\([a-z_]*\)".*/\1/p')
  case $status in
    completed) break ;;
    failed | expired | cancelled) die "the load batch ended $status" ;;
  esac
  sleep 1
done
output_mb=$(calc '%.0f' "$(stat -c %s "$work"/emu-load/files/* | sort -n | tail -n 1) / 1e6")
# Both sides run $load_runs times, alternating who goes first after the first pair (poll must go first once, to
# make the rows psql copies), each poll run into a fresh schema; the medians are compared. A single pair would
# give the poller the first, slowest slot every time (about 2-4 s slower here, right after the emulator's work).
poll_load() { # poll_load I: one timed load into the fresh schema ${schema}_I
  local s=${schema}_$1
  psql_q -c "drop schema if exists $s cascade" >/dev/null 2>&1
  "$batchctl" --schema "$s" migrate >/dev/null
  "$batchctl" --schema "$s" track "$batch_id" >/dev/null
  log "[load] run $1/$load_runs: batchctl poll --exit-when-done, loading $n result lines ($output_mb MB)"
  psql_q -c checkpoint >/dev/null 2>&1 || true # as before the psql \copy
  sync
  OPENAI_BASE_URL=$base_url timed "load_$1" "$batchctl" --schema "$s" poll --exit-when-done --poll-interval 200ms,2s
  local loaded
  loaded=$(psql_q -c "select count(*) from $s.results")
  [ "$loaded" -eq "$n" ] || die "load run $1 left $loaded rows, want $n"
  [ "$1" = 1 ] && want load && export_rows "$s" "$work/load.tsv"
  psql_q -c "drop schema $s cascade" >/dev/null 2>&1 || true # frees the disk
}
psql_load() { # psql_load I
  log "[load] run $1/$load_runs: psql \\copy of the same $n rows into a twin table"
  copy_twin "$schema" "psql_load_$1" "$work/load.tsv"
  psql_q -c "drop table $schema.results_twin" >/dev/null
}
fi

if want load; then
load_times=() psql_load_times=() load_rss=0 load_anon=0
for i in $(seq "$load_runs"); do
  if [ $((i % 2)) -eq 1 ]; then poll_load "$i"; psql_load "$i"; else psql_load "$i"; poll_load "$i"; fi
  load_times+=("$(secs "load_$i")") psql_load_times+=("$(secs "psql_load_$i")")
  load_rss=$(( $(rss_kib "load_$i") > load_rss ? $(rss_kib "load_$i") : load_rss ))
  load_anon=$(( $(anon_kib "load_$i") > load_anon ? $(anon_kib "load_$i") : load_anon ))
done
rm -f "$work/load.tsv"
load_s=$(median "${load_times[@]}")
psql_load_s=$(median "${psql_load_times[@]}")
load_runs_text="poll $(fmt_runs "${load_times[@]}") s; psql $(fmt_runs "${psql_load_times[@]}") s"
fi

# --- 8. results load through a connection cut every 100 MB -----------------------------------------------------

if want cut; then
# The same batch, loaded through internal/tools/cutproxy, which drops every response's connection after
# $cut_every bytes of its body: each download resumes with Range from the byte it reached. Uncut and cut runs
# alternate, each into a fresh schema; the medians are compared.
cut_every=${BENCH_CUT_EVERY:-100000000}
"$go" build -o "$work/cutproxy" ./internal/tools/cutproxy
"$work/cutproxy" -target "$base_url" -every "$cut_every" >"$work/cutproxy.out" 2>"$work/cutproxy.log" &
cutproxy_pid=$!
emulator_pids+=("$cutproxy_pid")
for _ in $(seq 100); do grep -q base_url "$work/cutproxy.out" 2>/dev/null && break; sleep 0.05; done
cut_url=$(sed -n 's/.*"base_url":"\([^"]*\)".*/\1/p' "$work/cutproxy.out")
[ -n "$cut_url" ] || die "cutproxy printed no base_url"
uncut_url=$base_url
uncut_times=() cut_times=() cut_rss=0
for i in $(seq "$load_runs"); do
  for side in $([ $((i % 2)) -eq 1 ] && echo "uncut cut" || echo "cut uncut"); do
    if [ "$side" = cut ]; then base_url=$cut_url; else base_url=$uncut_url; fi
    poll_load "${side}_$i"
    if [ "$side" = cut ]; then
      cut_times+=("$(secs "load_cut_$i")")
      cut_rss=$(( $(rss_kib "load_cut_$i") > cut_rss ? $(rss_kib "load_cut_$i") : cut_rss ))
    else
      uncut_times+=("$(secs "load_uncut_$i")")
    fi
  done
done
base_url=$uncut_url
stop_emulator "$cutproxy_pid"
cuts=$(sed -n 's/^cutproxy: \([0-9]*\) .*/\1/p' "$work/cutproxy.log")
[ "${cuts:-0}" -gt 0 ] || die "cutproxy cut no download: the cut runs measured nothing"
uncut_s=$(median "${uncut_times[@]}")
cut_s=$(median "${cut_times[@]}")
cut_runs_text="uncut $(fmt_runs "${uncut_times[@]}") s; cut $(fmt_runs "${cut_times[@]}") s"
fi

if want load || want cut; then
stop_emulator "$load_emulator"
rm -rf "$work/emu-load"
fi

# --- 5. API calls per poll round --------------------------------------------------------------------------------

if want round; then

log "[poll round] API calls per poll round: go test -bench BenchmarkRefreshRound ./poll/ (1 000 batches in flight)"
"$go" test -run '^$' -bench '^BenchmarkRefreshRound$' -benchtime 5x -count 1 ./poll/ >"$work/refresh.bench"
metric() { awk -v sub_="$1" -v unit="$2" '$1 ~ "BenchmarkRefreshRound/" sub_ { for (i = 2; i <= NF; i++) if ($i == unit) print $(i - 1) }' "$work/refresh.bench"; }
bulk_lists=$(metric bulk list_calls/op)
bulk_gets=$(metric bulk get_calls/op)
bulk_ns=$(metric bulk ns/op)
naive_gets=$(metric naive get_calls/op)
naive_ns=$(metric naive ns/op)
bench_batches=$(metric bulk batches)
[ -n "$bulk_lists" ] && [ -n "$naive_gets" ] || { cat "$work/refresh.bench" >&2; die "no figures from BenchmarkRefreshRound"; }
fi

# --- 6. end to end ----------------------------------------------------------------------------------------------

if want e2e; then

log "[end to end] end to end: generating $n records"
"$gen" records "$n" >"$work/records.jsonl"
records_mb=$(size_mb "$work/records.jsonl")
start_emulator emu-e2e --phase-delay 100ms
e2e_emulator=$emulator_pid
log "[end to end] batchctl submit ($records_mb MB), then batchctl poll --exit-when-done"
sync
e2e_t0=$(date +%s%N)
OPENAI_BASE_URL=$base_url timed e2e_submit "$batchctl" --schema "$e2e_schema" submit --progress never \
  --spool-dir "$work/spool-e2e" --model gpt-4o-mini --id-field id "$work/records.jsonl" >"$work/e2e.batches"
OPENAI_BASE_URL=$base_url timed e2e_poll "$batchctl" --schema "$e2e_schema" poll --exit-when-done \
  --poll-interval 200ms,2s
e2e_t1=$(date +%s%N)
e2e_s=$(calc '%.6f' "($e2e_t1 - $e2e_t0) / 1e9")
e2e_batches=$(wc -l <"$work/e2e.batches")
loaded=$(psql_q -c "select count(*) from $e2e_schema.results")
[ "$loaded" -eq "$n" ] || die "end to end left $loaded rows, want $n"
stop_emulator "$e2e_emulator"
rm -rf "$work/emu-e2e" "$work/spool-e2e"
log "[end to end] the limit: cp --reflink=never of the records, psql \\copy of the result rows"
sync
timed e2e_cp cp --reflink=never "$work/records.jsonl" "$work/records.copy"
rm -f "$work/records.copy" "$work/records.jsonl"
twin_copy "$e2e_schema" psql_e2e
e2e_floor_s=$(calc '%.6f' "$(secs e2e_cp) + $(secs psql_e2e)")
fi

# --- 3. peak RSS of a real submit of ≥ 1 GiB --------------------------------------------------------------------

if want submit; then

log "[submit RSS] peak RSS of submit: generating $big_records records of about 5 KB"
"$gen" records -text-bytes 5000 "$big_records" >"$work/big.jsonl"
big_mb=$(size_mb "$work/big.jsonl")
# An hour per phase: the emulator stores the uploads and leaves them validating, so it takes no CPU from submit.
start_emulator emu-big --phase-delay 1h
big_emulator=$emulator_pid
log "[submit RSS] batchctl submit of $big_mb MB against the emulator (no database)"
sync
OPENAI_BASE_URL=$base_url timed big_submit env -u DATABASE_URL "$batchctl" submit --progress never \
  --spool-dir "$work/spool-big" --model gpt-4o-mini --id-field id "$work/big.jsonl" >"$work/big.batches"
big_batches=$(wc -l <"$work/big.batches")
big_requests=$(awk -F'"requests":' '{ split($2, a, ","); s += a[1] } END { print s }' "$work/big.batches")
[ "$big_requests" -eq "$big_records" ] || die "submit created batches of $big_requests requests, want $big_records"
stop_emulator "$big_emulator"
rm -rf "$work/emu-big" "$work/spool-big" "$work/big.jsonl"
fi

# --- 7. quota admission -----------------------------------------------------------------------------------------

if want quota; then
log "[quota] 20 batches at 4x the enqueued-token limit: with batchctl quota, then without (resubmit after token_limit_exceeded)"
"$go" run ./internal/tools/quotabench -batchctl "$batchctl" >"$work/quota.kv"
kv() { awk -v m="$1" -v k="$2" '$1 == "mode=" m { for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == k) print a[2] } }' "$work/quota.kv"; }
fi

# --- 9. prompt packing -------------------------------------------------------------------------------------------

# The demo's reviews through the built-in chat form with the demo's instruction, unpacked and packed, each record
# allowed 16 output tokens (--max-output-tokens 16 a record): the estimates differ by their prompt tokens only.
# submit's estimate counts the whole request body a quarter token a byte, JSON syntax and the packed answer's
# schema included, so it runs above a tokenizer's count on both sides.
pack_sizes="1 10 50"
if want pack; then
log "[pack] examples/reviews.jsonl unpacked vs --pack 10 vs --pack 50 (submit --dry-run estimates)"
for p in $pack_sizes; do
  pack_args=()
  [ "$p" -gt 1 ] && pack_args=(--pack "$p")
  env -u DATABASE_URL "$batchctl" submit --progress never --dry-run --spool-dir "$work/spool-pack-$p" --model gpt-4o-mini \
    --system "Classify the sentiment of this product review as positive, negative or neutral. Answer with one word." \
    --id-field id --max-output-tokens $((16 * p)) "${pack_args[@]}" examples/reviews.jsonl >"$work/pack-$p.out"
  awk -F'"estimated_tokens":' '{ split($2, a, ","); t += a[1] } END { printf "%d ", t }' "$work/pack-$p.out" >"$work/pack-$p.kv"
  awk -F'"estimated_cost_usd":' '{ split($2, a, ","); c += a[1] } END { printf "%.9f ", c }' "$work/pack-$p.out" >>"$work/pack-$p.kv"
  awk -F'"requests":' '{ split($2, a, ","); r += a[1] } END { printf "%d\n", r }' "$work/pack-$p.out" >>"$work/pack-$p.kv"
done
pack_records=$(grep -c . examples/reviews.jsonl)
pack_row() { # SIZE: tokens/record, cost/record (micro-USD), requests, vs unpacked
  read -r tok usd req <"$work/pack-$1.kv"
  read -r tok1 usd1 _ <"$work/pack-1.kv"
  awk -v t="$tok" -v u="$usd" -v r="$req" -v n="$pack_records" -v t1="$tok1" -v u1="$usd1" \
    'BEGIN { printf "%s | %.1f | %.2f | %.0f %% | %.0f %%", r, t / n, u / n * 1e6, (1 - t / t1) * 100, (1 - u / u1) * 100 }'
}
fi

# --- 10. scale --------------------------------------------------------------------------------------------------

if want scale; then
log "[scale] ${SCALEBENCH:-10000} batches in flight, 4 pollers on one Postgres (internal/tools/scalebench)"
"$go" run ./internal/tools/scalebench -batchctl "$batchctl" >"$work/scale.kv"
# sk KIND KEY [I]: the value of KEY on scalebench's line of KIND (the I-th such line, default the first).
sk() { awk -v k="$1" -v key="$2" -v want="${3:-1}" '$1 == k { n++; if (n != want) next; for (i = 2; i <= NF; i++) { split($i, a, "="); if (a[1] == key) print a[2] } }' "$work/scale.kv"; }
fi

# --- 11. webhooks ----------------------------------------------------------------------------------------------

if want webhook; then
log "[webhook] delay from a batch's end to its rows loaded: webhooks to batchctl serve, then polling alone (default interval)"
"$go" run ./internal/tools/webhookbench -batchctl "$batchctl" >"$work/webhook.kv"
wh() { awk -v m="$1" -v k="$2" '$1 == "mode=" m { for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == k) print a[2] } }' "$work/webhook.kv"; }
fi

# --- the table --------------------------------------------------------------------------------------------------

elapsed=$(( $(date +%s) - started ))
log "done in ${elapsed}s"
if [ -n "$only" ]; then # raw figures of the stages run; the table needs them all
  want spool && echo "spool: dry run $dry_s s (median of $runs), cp $cp_s s, ratio $(calc '%.2f' "$dry_s / $cp_s"), peak RSS $dry_rss KiB"
  want load && echo "load: poll $load_s s, psql \\copy $psql_load_s s (medians; $load_runs_text), rate ratio $(calc '%.2f' "$psql_load_s / $load_s"), peak RSS $load_rss KiB (anonymous $load_anon KiB)"
  want round && echo "round: $bulk_lists list + $bulk_gets get calls, $bulk_ns ns; naive $naive_gets calls"
  want e2e && echo "e2e: $e2e_s s, floor $e2e_floor_s s, peak RSS submit $(rss_kib e2e_submit) KiB, poll $(rss_kib e2e_poll) KiB"
  want submit && echo "submit: $big_mb MB, $big_batches batches, peak RSS $(rss_kib big_submit) KiB (anonymous $(anon_kib big_submit) KiB)"
  want quota && cat "$work/quota.kv"
  want cut && echo "cut: uncut $uncut_s s, cut every $cut_every bytes $cut_s s (medians; $cut_runs_text), $cuts cuts, ratio $(calc '%.2f' "$cut_s / $uncut_s"), peak RSS $cut_rss KiB"
  if want pack; then
    for p in $pack_sizes; do echo "pack $p: requests | prompt tokens/record | cost/record (µUSD) | tokens saved | cost saved: $(pack_row "$p")"; done
  fi
  want scale && cat "$work/scale.kv"
  want webhook && cat "$work/webhook.kv"
  exit 0
fi
pass() { if awk "BEGIN { exit !($1) }"; then echo pass; else echo MISS; fi; }
mib() { calc '%.1f' "$1 / 1024"; }
fmt_n() { # 1234567 → 1 234 567
  awk -v x="$1" 'BEGIN { s = sprintf("%d", x); o = ""; while (length(s) > 3) { o = " " substr(s, length(s) - 2) o; s = substr(s, 1, length(s) - 3) }; print s o }'
}
rate() { calc '%.0f' "$1 / $2"; }

spool_ratio=$(calc '%.2f' "$dry_s / $cp_s")
load_ratio=$(calc '%.2f' "$psql_load_s / $load_s")
submit_rss_ratio=$(calc '%.2f' "$(rss_kib big_submit) / ($rss_limit_mib * 1024)")
load_rss_ratio=$(calc '%.2f' "$load_rss / ($rss_limit_mib * 1024)")
calls_ratio=$(calc '%.3f' "$bulk_lists / $naive_gets")
e2e_ratio=$(calc '%.2f' "$e2e_s / $e2e_floor_s")
cut_ratio=$(calc '%.2f' "$cut_s / $uncut_s")
target_calls=$(( bench_batches / 100 + 5 ))

# scale_rows: the rows of stage 10.
scale_rows() {
  local b pollers_cpu="" pollers_rss="" i
  b=$(sk calls batches)
  for i in 1 2 3 4; do
    pollers_cpu="${pollers_cpu:+$pollers_cpu, }$(sk poller cpu_s "$i")"
    pollers_rss="${pollers_rss:+$pollers_rss, }$(sk poller rss_mib "$i")"
  done
  echo "| scale: API calls per refresh round (period $(sk calls period_s) s), $(fmt_n "$b") batches in flight, 4 pollers, counted by the emulator from one round's start to the next | max $(sk calls max), mean $(sk calls mean) over $(sk calls periods) rounds | ⌈N/100⌉ + 4 = $(sk calls target) | $(calc '%.2f' "$(sk calls max) / $(sk calls target)") × the target | ≤ 1 | $(pass "$(sk calls max) <= $(sk calls target)") |"
  echo "| scale: each poller's CPU time and peak RSS over the whole run ($(sk lag run_s) s) | CPU $pollers_cpu s; RSS $pollers_rss MiB | | | report | |"
  echo "| scale: loads per poller | $(sk spread min_loads) to $(sk spread max_loads) | a fair share: $(calc '%.0f' "$b / 4") | max $(sk spread max_share) × the share | every poller loads, ≤ 2 × | $(pass "$(sk spread min_loads) > 0 && $(sk spread max_share) <= 2") |"
  echo "| scale: last batch's end to its rows loaded | $(sk lag last_batch_s) s (all rows $(sk lag all_loaded_s) s after the last end; $(sk lag loads_per_s) loads/s) | the refresh period: $(sk calls period_s) s | | report | |"
  echo "| scale: \`status\`, $(fmt_n "$b") batches, $(fmt_n "$(sk latency rows)") result rows | $(sk latency status_s) s | 1 s | | < 1 s | $(pass "$(sk latency status_s) < 1") |"
  echo "| scale: first $(sk latency first_page) rows of \`results --all\`, input / completion order | $(sk latency results_input_s) s / $(sk latency results_completion_s) s | 1 s | | < 1 s | $(pass "$(sk latency results_input_s) < 1 && $(sk latency results_completion_s) < 1") |"
  echo "| scale: one Postgres's rates (fsync off) | refresh upserts $(fmt_n "$(sk rates upserts_per_s)")/s, touches $(fmt_n "$(sk rates touches_per_s)")/s; COPY $(fmt_n "$(sk copy copy_rows_per_s)") rows/s; River $(sk lag loads_per_s) loads/s | | | report | |"
}

cat <<EOF
| figure | batchctl | limit, measured in the same run | ratio | target | |
| --- | --- | --- | --- | --- | --- |
| spool throughput: \`submit --dry-run\`, $(fmt_n "$n") chat requests ($requests_mb MB, $dry_batches batch files) | $(calc '%.2f' "$dry_s") s, $(rate "$requests_mb" "$dry_s") MB/s | \`cp\`: $(calc '%.2f' "$cp_s") s, $(rate "$requests_mb" "$cp_s") MB/s | $spool_ratio × cp's time | ≤ 4 | $(pass "$spool_ratio <= 4") |
| results load: one batch of $(fmt_n "$n") result lines ($output_mb MB) into Postgres | $(calc '%.2f' "$load_s") s, $(fmt_n "$(rate "$n" "$load_s")") rows/s | \`psql \\copy\` of the same rows: $(calc '%.2f' "$psql_load_s") s, $(fmt_n "$(rate "$n" "$psql_load_s")") rows/s | $load_ratio × psql's rate | ≥ 0.8 | $(pass "$load_ratio >= 0.8") |
| peak RSS of a real \`submit\`: $big_mb MB of records, $big_batches batches | $(mib "$(rss_kib big_submit)") MiB (anonymous $(mib "$(anon_kib big_submit)") MiB) | $rss_limit_mib MiB | $submit_rss_ratio | ≤ 1 | $(pass "$submit_rss_ratio <= 1") |
| peak RSS of the $(fmt_n "$n")-line load | $(mib "$load_rss") MiB (anonymous $(mib "$load_anon") MiB) | $rss_limit_mib MiB | $load_rss_ratio | ≤ 1 | $(pass "$load_rss_ratio <= 1") |
| API calls of one poll round, $(fmt_n "$bench_batches") batches in flight | $bulk_lists list + $bulk_gets get calls, $(calc '%.0f' "$bulk_ns / 1e6") ms | one GET per batch: $naive_gets calls, $(calc '%.0f' "$naive_ns / 1e6") ms | $calls_ratio × the calls | ≤ $target_calls calls | $(pass "$bulk_lists + $bulk_gets <= $target_calls") |
| quota admission: $(kv quota batches) batches, $(kv quota tokens) prompt tokens = 4× the limit of $(kv quota limit), emulator at 2 s a phase | $(kv quota failures) token_limit_exceeded; makespan $(kv quota makespan) s; peak in flight $(kv quota peak_ratio) of the limit | ideal packing by the API's own counts: $(kv quota ideal) s; without a quota: $(kv retry failures) token_limit_exceeded, $(kv retry makespan) s | $(kv quota ratio) × the ideal | 0 failures, ≤ 1.5 × | $(pass "$(kv quota failures) == 0 && $(kv quota ratio) <= 1.5 && $(kv quota peak_ratio) <= 1") |
| results load through a connection cut every $(calc '%.0f' "$cut_every / 1e6") MB: the batch of row 2, $cuts cuts in $load_runs runs | $(calc '%.2f' "$cut_s") s, peak RSS $(mib "$cut_rss") MiB | the same load uncut: $(calc '%.2f' "$uncut_s") s | $cut_ratio × the uncut time | ≤ 1.3 | $(pass "$cut_ratio <= 1.3") |
$(scale_rows)
| webhooks: delay from a batch's end to its rows loaded, $(wh webhook batches) batches ending across the poll cycle | median $(wh webhook median) s, max $(wh webhook max) s ($(wh webhook webhooks) webhooks to \`serve\`) | polling alone at the default 15 s interval: median $(wh poll median) s, max $(wh poll max) s | $(calc '%.3f' "$(wh webhook median) / $(wh poll median)") × polling's median | median ≤ 2 s | $(pass "$(wh webhook median) <= 2") |
| end to end: $(fmt_n "$n") records ($records_mb MB) to result rows, $e2e_batches batches, emulator at 100 ms a phase | $(calc '%.1f' "$e2e_s") s, $(fmt_n "$(rate "$n" "$e2e_s")") records/s | \`cp\` of the input + \`psql \\copy\` of the rows: $(calc '%.1f' "$e2e_floor_s") s | $e2e_ratio × the floor | report | |

Scale $scale; timings of row 1 are the median of $runs runs, of row 2 the medians of $load_runs runs of each side
($load_runs_text), the others one run each; peak RSS by
\`/usr/bin/time\` (maximum resident set size). Row 1: \`cp --reflink=never\` of the same file (GNU cp then copies with read and
write of 128 KiB, no copy_file_range: checked with strace, coreutils 9.1), both reading from the page cache and
writing without fsync; the dry run reads, checks, cuts, hashes (sha256) and writes every line. Row 2: \`batchctl poll --exit-when-done\`
on one tracked, completed batch, into a fresh schema each run: start-up, one refresh, downloading the input file (for input_line) and the output
file from the emulator, decoding every line and COPY in one transaction; psql \`\\copy\` reads the same rows,
exported as text, into an empty twin table (\`like results including all\`: same defaults and indexes), after a
checkpoint (as the poller's load). The two sides alternate who goes first after the first pair. Row 4 is the largest of the load runs. Rows 3 and 4: \`batchctl version\` alone peaks at $(mib "$(rss_kib floor)") MiB, nearly all of it the 120 MB binary's own pages, mapped from the page cache (this kernel maps them in 2 MB folios) and shared by every batchctl process. The anonymous figure, RssAnon sampled every 50 ms, is the process's own memory: heap and stacks. Row 3: submit streams batch files of ≤ 200 MB to an emulator that only stores them. Row 5:
BenchmarkRefreshRound in poll/ (one bulk refresh: GET /v1/batches pages of 100, each page's changes written in one transaction; the naive
round makes one GET per batch and no database work). Row 6: submit (which records each batch in Postgres) then poll
until every row is loaded, against an emulator sharing the machine's CPUs (it validates and answers every request);
peak RSS submit $(mib "$(rss_kib e2e_submit)") MiB, poll $(mib "$(rss_kib e2e_poll)") MiB (loads of $e2e_batches batches, up to 10 at
a time). The floor is the same bytes moved without an API: \`cp\` of the input file ($(calc '%.2f' "$(secs e2e_cp)") s)
plus \`psql \\copy\` of the result rows ($(calc '%.2f' "$(secs psql_e2e)") s). Row 8: the poller downloads the
input file and the output file through internal/tools/cutproxy, which drops each response's connection after
$(calc '%.0f' "$cut_every / 1e6") MB of its body; each download resumes with \`Range: bytes=N-\` from the byte it reached;
uncut and cut runs alternate, medians compared ($cut_runs_text).

Prompt packing (\`submit --pack\`): the demo's $pack_records reviews through the built-in chat form with the demo's
instruction, gpt-4o-mini at the price table's Batch API prices, each record allowed 16 output tokens; submit's own
estimate (\`--dry-run\`: a quarter token a byte of the whole body, JSON syntax and the packed answer's schema included).

| pack | requests | prompt tokens / record | estimated cost / record (µUSD) | prompt tokens saved | cost saved |
| --- | --- | --- | --- | --- | --- |
| unpacked | $(pack_row 1) |
| 10 | $(pack_row 10) |
| 50 | $(pack_row 50) |

Scale rows: internal/tools/scalebench, the
emulator in its process with no hourly creation cap, every batch on one input file, created and tracked before 4
\`poll --exit-when-done\` processes start (refresh period 5 s); calls are the emulator's own count of list and GET
calls, sampled every 100 ms, in each refresh round (from one round's start to the next, River's attempted_at) from
two periods after the pollers started to the first batch's end; CPU and peak RSS from each
process's rusage; the results table then grown to 1 000 rows a batch (COPY of a tenth, timed; the rest by insert
from generate_series), each batch's rows at its own load time; Postgres rates with fsync off (the throwaway cluster).
The webhooks row: internal/tools/webhookbench runs \`batchctl poll\` with its defaults against an emulator at 2 s a
phase, on batches created 2.5 s apart so that their ends fall anywhere in the poll cycle; with webhooks the emulator
sends each batch.completed, signed, to \`batchctl serve\`, which queues an immediate refresh of the batch. A batch's
end is when the emulator first reports it ended (read every 10 ms), its load the results_loaded_at of its row.

Machine: $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), \
$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr), \
$(df -T "$work" | awk 'NR == 2 { print $2 }') under $(dirname "$work"); PostgreSQL $pg_version; \
$("$go" version | awk '{ print $3 }'); $("$batchctl" version 2>/dev/null | head -n 1); $(date -u +%Y-%m-%d); ${elapsed}s.
EOF

#!/usr/bin/env bash
# make demo: the whole pipeline on local defaults, offline, in well under a minute.
#
#   emulator (free port, sending signed webhooks) → migrate → batchctl serve (dashboard + webhooks)
#   → submit examples/reviews.jsonl (6 batches) → poll until loaded → status table → a sample of results in input
#   order → the dashboard's URL (kept up until Enter when stdin is a terminal) → stop everything started here
#
# It needs DATABASE_URL (make demo runs it under internal/tools/withpg, which starts a throwaway Postgres when
# DATABASE_URL is unset) and bin/batchctl (make build). No API key and no network: the API is `batchctl emulator`.
# Tables go into schema $DEMO_SCHEMA (default batchctl_demo), which the demo drops and recreates on every run and
# leaves in place at the end, so on your own database you can look at it afterwards; it touches nothing else.
#
#   DEMO_SCHEMA=my_demo DATABASE_URL=postgres://localhost/app scripts/demo.sh
#
# DEMO_PROVIDER=azure or anthropic runs the same pipeline through that provider's API, emulated on the same port
# (make demo DEMO_PROVIDER=anthropic).
set -euo pipefail
cd "$(dirname "$0")/.."

batchctl=${BATCHCTL:-bin/batchctl}
schema=${DEMO_SCHEMA:-batchctl_demo}
input=${DEMO_INPUT:-examples/reviews.jsonl}
provider=${DEMO_PROVIDER:-openai}
case "$provider" in
  openai | azure) default_template=examples/classify.tmpl ;;
  anthropic) default_template=examples/classify-anthropic.tmpl ;;
  *) echo "demo: DEMO_PROVIDER=$provider: want openai, azure or anthropic" >&2; exit 2 ;;
esac
template=${DEMO_TEMPLATE:-$default_template}
batch_size=${DEMO_BATCH_SIZE:-500}

if [ -z "${DATABASE_URL:-}" ]; then
  echo "demo: DATABASE_URL is not set; run 'make demo' (it starts a throwaway Postgres) or set it" >&2
  exit 2
fi
if [ ! -x "$batchctl" ]; then
  echo "demo: $batchctl not found; run 'make build' first" >&2
  exit 2
fi

# Headings and commands go to stdout with the output they introduce, so the demo reads in order when piped.
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold= plain=; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/batchctl-demo.XXXXXX")
emulator_pid=
serve_pid=
cleanup() {
  status=$?
  for pid in $serve_pid $emulator_pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  if [ "$status" -ne 0 ] && [ -s "$work/emulator.log" ]; then
    echo "demo: failed (exit $status); the emulator's log:" >&2
    tail -n 20 "$work/emulator.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=$(date +%s.%N)

# The dashboard's port, chosen now: the emulator sends its webhooks there. The first free one from DEMO_HTTP_PORT.
http_port=${DEMO_HTTP_PORT:-8080}
while (exec 3<>"/dev/tcp/127.0.0.1/$http_port") 2>/dev/null; do http_port=$((http_port + 1)); done
http_addr=127.0.0.1:$http_port
# A Standard Webhooks secret as OpenAI issues them (whsec_ and 24 bytes or more in base64); a demo value.
export BATCHCTL_WEBHOOK_SECRET=whsec_ZGVtby1ub3QtYS1zZWNyZXQtMDEyMzQ1Njc4OQ==

say "1. start the API emulator on a free port (300 ms per batch phase, webhooks to http://$http_addr/webhooks/openai)"
"$batchctl" emulator --addr 127.0.0.1:0 --phase-delay 300ms --data-dir "$work/emulator" \
  --webhook-url "http://$http_addr/webhooks/openai" >"$work/emulator.out" 2>"$work/emulator.log" &
emulator_pid=$!
for _ in $(seq 100); do
  grep -q base_url "$work/emulator.out" 2>/dev/null && break
  kill -0 "$emulator_pid" 2>/dev/null || { echo "demo: the emulator exited" >&2; exit 1; }
  sleep 0.1
done
base_url=$(sed -n 's/.*"base_url":"\([^"]*\)".*/\1/p' "$work/emulator.out" | head -n 1)
[ -n "$base_url" ] || { echo "demo: the emulator did not print its base_url" >&2; exit 1; }
root_url=${base_url%/v1}
# The only things that change against the real API: the key and the base URL (unset it for the real one).
case "$provider" in
  openai)
    echo "OPENAI_BASE_URL=$base_url"
    export OPENAI_BASE_URL=$base_url OPENAI_API_KEY=sk-demo-not-a-real-key ;;
  azure)
    echo "AZURE_OPENAI_ENDPOINT=$root_url   (the api-version paths, /openai/...)"
    export AZURE_OPENAI_ENDPOINT=$root_url AZURE_OPENAI_API_KEY=demo-not-a-real-key ;;
  anthropic)
    echo "ANTHROPIC_BASE_URL=$root_url   (Message Batches, /v1/messages/batches)"
    export ANTHROPIC_BASE_URL=$root_url ANTHROPIC_API_KEY=sk-ant-demo-not-a-real-key ;;
esac
export BATCHCTL_PROVIDER=$provider
export BATCHCTL_SCHEMA=$schema BATCHCTL_SPOOL_DIR=$work/spool

say "2. batchctl migrate   (schema $schema, recreated for the demo)"
# A fresh schema, so batches of an interrupted earlier run (in an emulator now gone) do not keep the poller waiting.
if command -v psql >/dev/null 2>&1; then
  psql "$DATABASE_URL" -qX -v ON_ERROR_STOP=1 -c "drop schema if exists $schema cascade" 2>&1 | grep -v NOTICE >&2 || true
fi
echo "+ batchctl migrate"
"$batchctl" migrate --log-level warn
"$batchctl" migrate --status | tail -n 3

say "2b. batchctl serve --addr $http_addr   (the live dashboard, River UI, metrics, and the webhooks' endpoint)"
"$batchctl" serve --addr "$http_addr" >"$work/serve.out" 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 100); do
  grep -q "serving the dashboard" "$work/serve.log" 2>/dev/null && break
  kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log" >&2; echo "demo: batchctl serve exited" >&2; exit 1; }
  sleep 0.1
done
echo "dashboard: http://$http_addr/"

records=$(grep -c . "$input")
say "3. batchctl submit    ($records reviews from $input through $template, $batch_size per batch, provider $provider)"
echo "+ batchctl submit --provider $provider --template $template --id-field id --max-requests $batch_size $input"
"$batchctl" submit --log-level warn --progress never --template "$template" --id-field id \
  --max-requests "$batch_size" "$input" | tee "$work/batches.jsonl" |
  sed -E 's/"spool_sha256":"([0-9a-f]{12})[0-9a-f]*"/"spool_sha256":"\1…"/'

say "4. batchctl poll --exit-when-done   (track every batch, load each one's results when it ends)"
echo "+ batchctl poll --exit-when-done --poll-interval 200ms,2s"
"$batchctl" poll --log-level warn --exit-when-done --poll-interval 200ms,2s

say "5. batchctl status"
if "$batchctl" status --help >/dev/null 2>&1; then
  "$batchctl" status
else
  psql "$DATABASE_URL" -X -P footer=off -c "
    select batch_id, status, request_total as total, request_completed as completed, request_failed as failed,
           (metadata->>'batchctl_part')::int as part, results_loaded_at is not null as loaded,
           round(extract(epoch from ended_at - created_at)::numeric, 1) as seconds
    from $schema.batches order by created_at, (metadata->>'batchctl_part')::int"
fi

say "6. batchctl results --all --order input   (the first 10 of $records, in input order)"
if "$batchctl" results --help >/dev/null 2>&1; then
  # head closes the pipe early; results then stops on a broken pipe, which is not a failure here.
  { "$batchctl" results --all --order input || true; } | head -n 10 >"$work/sample.jsonl"
  echo "one row as batchctl prints it (JSON Lines):"
  head -n 1 "$work/sample.jsonl"
  echo
  echo "custom_id, input_line and the answer of each:"
  awk '{
    id = ""; ln = ""; ans = ""
    if (match($0, /"custom_id": ?"[^"]*"/)) { id = substr($0, RSTART, RLENGTH); sub(/^"custom_id": ?"/, "", id); sub(/"$/, "", id) }
    if (match($0, /"input_line": ?[0-9]+/)) { ln = substr($0, RSTART, RLENGTH); sub(/^"input_line": ?/, "", ln) }
    if (match($0, /"content": ?"([^"\\]|\\.)*"/)) { ans = substr($0, RSTART, RLENGTH); sub(/^"content": ?"/, "", ans); sub(/"$/, "", ans); gsub(/\\n/, " ", ans) }
    else if (match($0, /"text": ?"([^"\\]|\\.)*"/)) { ans = substr($0, RSTART, RLENGTH); sub(/^"text": ?"/, "", ans); sub(/"$/, "", ans); gsub(/\\n/, " ", ans) }
    printf "  %-10s line %-5s %s\n", id, ln, substr(ans, 1, 70)
  }' "$work/sample.jsonl"
else
  psql "$DATABASE_URL" -X -P footer=off -c "
    select r.custom_id, r.input_line as line, r.status_code as status,
           left(regexp_replace(r.response->'choices'->0->'message'->>'content', '\s+', ' ', 'g'), 60) as answer
    from $schema.results r join $schema.batches b using (batch_id)
    order by (b.metadata->>'batchctl_part')::int, r.input_line limit 10"
fi

say "7. batchctl cost --by model   (what the run cost at Batch API prices, and at synchronous prices)"
"$batchctl" cost --by model

say "8. webhooks   (each batch's end, pushed by the emulator, signed, to batchctl serve)"
if [ "$provider" = openai ]; then
  sleep 0.5 # the last batch's event may still be on its way
  hooks=$(psql "$DATABASE_URL" -qtAX -c "select count(*) from $schema.river_job where kind = 'batchctl_refresh_batch'" 2>/dev/null || echo "?")
  echo "$hooks batch events verified by batchctl serve, each queuing an immediate refresh of its batch:"
  grep -o 'msg=webhook type=[^ ]* batch_id=[^ ]* result=[a-z]*' "$work/serve.log" | sed 's/^msg=webhook /  /' | head -n 6 || true
else
  echo "(OpenAI's webhooks only: DEMO_PROVIDER=$provider sends none)"
fi

rows=$(psql "$DATABASE_URL" -qtAX -c "select count(*) from $schema.results" 2>/dev/null || echo "?")
elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
say "done: $rows result rows for $records reviews in ${elapsed}s"
cat <<EOF
The emulator's answers are deterministic fakes (a label picked by a hash of the prompt, then its first 40
characters); against the real API the same commands land real answers. The rows stay in schema $schema:
  psql "\$DATABASE_URL" -c 'select custom_id, response from $schema.results limit 5'
EOF
if [ -t 0 ] && [ -t 1 ]; then
  printf '\n%sThe dashboard is up at http://%s/ (River UI at /riverui/). Press Enter to stop it.%s\n' "$bold" "$http_addr" "$plain"
  read -r _ || true
else
  echo "dashboard was at http://$http_addr/ (stdin is not a terminal: not waiting)"
fi

#!/usr/bin/env bash
# Server CPU per small request, in the open model: starts SendMe (release build, role
# `all`, the simulated provider with receipts after 100 ms, a fresh data dir, port 18181),
# runs load-tests/small-requests-open.js at RATE requests/s for DURATION, and prints the
# server's CPU time (utime + stime from /proc/<pid>/stat) per request beside k6's latency,
# and k6's own CPU per request (it shares the machine's cores with the server; its start
# and setup are in that figure too), and for SendMe the server's own latency (its HTTP
# histogram: the bucket that holds the p99, the share answered within 10 ms).
#
#   cargo build --release --bin sendme
#   RATE=1000 DURATION=30s load-tests/small-cpu.sh
#
# It also prints the same per thread name (actix's HTTP workers, `sendme-accept` the accept
# writer, `tokio-rt-worker` the status groups, `fjall:worker`, `sendme-fold`, ...).
# With PERF=1 the run is also recorded with `perf record -g` (perf.data in the data dir's
# parent) for `perf report`. Stops only the server it started.
#
# SERVER=floor (or floor-durable) runs the same against examples/floor.rs instead, a server
# on actix-web with SendMe's workers and allocator that only parses the body and answers
# 201 (floor-durable: after an append and an fdatasync shared by the requests waiting):
# what no send can cost less than. The data dir is under $TMPDIR (or /tmp): on a tmpfs an
# fdatasync costs nothing, so point TMPDIR at a real disk there.
#   cargo build --release --example floor
set -euo pipefail
export LC_ALL=C # `time` and awk print decimal points
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
rate="${RATE:-1000}" duration="${DURATION:-30s}" server="${SERVER:-sendme}" port=18181
dir="$(mktemp -d -t sendme-small-cpu.XXXXXX)"
case "$server" in
  sendme)
    SENDME_CONFIG_DIR=config SENDME__SERVER__PORT=$port SENDME__STORE__PATH="$dir/data" \
      SENDME__PROVIDER__SIMULATED__RECEIPT_DELAY_MS=100 RUST_LOG=warn \
      "$target/release/sendme" >"$dir/out" 2>"$dir/err" & ;;
  floor) "$target/release/examples/floor" --port $port >"$dir/out" 2>"$dir/err" & ;;
  floor-durable)
    mkdir "$dir/data"
    "$target/release/examples/floor" --port $port --durable "$dir/data" >"$dir/out" 2>"$dir/err" & ;;
  *) echo "SERVER is sendme, floor or floor-durable" >&2; exit 2 ;;
esac
pid=$!
# The data dir goes with the server (a run leaves ~100 MB); with PERF=1 the profile stays.
cleanup() {
  kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  if [ "${PERF:-}" = 1 ]; then rm -rf "$dir/data"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
# Ready: SendMe's /readyz answers 200; the floor answers anything (404 there).
ready_url="http://127.0.0.1:$port/readyz" ready_flags=-fs
[ "$server" = sendme ] || ready_url="http://127.0.0.1:$port/" ready_flags=-s
ready=0
for _ in $(seq 100); do
  kill -0 $pid 2>/dev/null || { echo "the server exited:" >&2; cat "$dir/err" >&2; exit 1; }
  curl $ready_flags --max-time 1 -o /dev/null "$ready_url" && { ready=1; break; }
  sleep 0.1
done
[ $ready = 1 ] || { echo "the server is not ready after 10 s:" >&2; cat "$dir/err" >&2; exit 1; }
if [ "$server" = sendme ]; then
  token="$(SENDME_CONFIG_DIR=config "$target/release/sendme" token --demo 2>/dev/null)"
  admin="$(SENDME_CONFIG_DIR=config "$target/release/sendme" token --admin 2>/dev/null)"
else
  token=floor admin=floor # the floor checks no token; its top-up route answers 200
fi
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
# Each thread's name and CPU ticks (its name has no spaces but for actix's `actix-rt|system`).
thread_ticks() {
  for t in /proc/"$pid"/task/*; do
    printf '%s %s %s\n' "${t##*/}" "$(tr ' ' '_' <"$t/comm")" \
      "$(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}')"
  done 2>/dev/null
}
hz="$(getconf CLK_TCK)"
if [ "${PERF:-}" = 1 ]; then
  perf record -F 999 -g -p "$pid" -o "$dir/perf.data" >/dev/null 2>&1 &
  perf_pid=$!
fi
before="$(ticks)"; threads_before="$(thread_ticks)"
# k6's own CPU (user + system), from bash's `time` of its run.
summary="$({ TIMEFORMAT='k6_cpu %U %S'; time SENDME_URL="http://127.0.0.1:$port" SENDME_TOKEN="$token" \
  SENDME_ADMIN_TOKEN="$admin" RATE="$rate" DURATION="$duration" \
  k6 run --quiet load-tests/small-requests-open.js 2>"$dir/k6.err" | tail -1; } 2>&1)" ||
  { echo "k6 failed:" >&2; cat "$dir/k6.err" >&2; exit 1; }
after="$(ticks)"; threads_after="$(thread_ticks)"
if [ "${PERF:-}" = 1 ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; echo "perf data: $dir/perf.data"; fi
requests="$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$summary")"
grep -v '^k6_cpu' <<<"$summary" || true
awk -v t=$((after - before)) -v hz="$hz" -v n="$requests" \
  'BEGIN { printf "server CPU: %.2f s for %d requests = %.0f us/request\n", t / hz, n, t / hz / n * 1e6 }'
awk -v n="$requests" '/^k6_cpu/ { printf "k6 CPU: %.2f s = %.0f us/request\n", $2 + $3, ($2 + $3) / n * 1e6 }' <<<"$summary"
if [ "$server" = sendme ]; then
  # The server's own view (its HTTP histogram, handler start to answer): k6's latencies
  # also hold the time requests wait for k6 itself, which shares the cores.
  { curl -fs --max-time 5 "http://127.0.0.1:$port/metrics" || true; } |
    awk -F'[{}]' '/^sendme_http_request_duration_seconds_bucket/ &&
        /method="POST",route="\/api\/messages\/sms\/contacts",/ {
        split($2, kv, "le=\""); le = kv[2]; sub(/".*/, "", le); n[++k] = le; c[k] = $3 + 0 }
      END { total = c[k]; if (!total) { print "server side: no histogram"; exit }
        for (i = 1; i <= k; i++) if (c[i] >= 0.99 * total) { p99 = i; break }
        for (i = 1; i <= k; i++) if (n[i] == "0.01") within = c[i]
        printf "server side: p99 in (%s, %s] s (histogram buckets), %.2f %% of sends within 10 ms\n",
          (p99 > 1 ? n[p99 - 1] : 0), n[p99], within / total * 100 }'
fi
# Per thread name, the same figure (threads that ended meanwhile, such as idle blocking-pool
# ones, are missing: the sum can be lower than the total).
join <(sort <<<"$threads_before") <(sort <<<"$threads_after") |
  awk -v hz="$hz" -v n="$requests" '{ d[$2] += $5 - $3 }
    END { for (k in d) if (d[k] > 0) printf "  %-18s %5.0f us/request\n", k, d[k] / hz / n * 1e6 }' |
  sort -k2 -n -r

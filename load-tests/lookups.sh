#!/usr/bin/env bash
# Lookup latency as the store grows: one account, messages that reach their final status
# (the in-process simulated provider: receipts after 100 ms, 1 % undelivered, 0.02 %
# failed for good), lookups by recipient and by status timed at each size.
#
#   load-tests/lookups.sh BIN SIZE... (sizes in millions of messages, ascending)
#
# BIN is the `sendme` binary to run; `broadcast` is taken from the same directory unless
# BROADCAST names it. Each 1,075,600-recipient broadcast (its own seed) is accepted as
# about 1,000,000 messages; the script waits for every one to be final and for the server
# to be idle, then runs load-tests/lookups.py (SAMPLES, default 200) and prints the data
# dir's size, the server's CPU time so far per message and its peak RSS. Each
# broadcast's recipients/s is printed too (the first one's on an idle server; the later
# ones' while the earlier messages are being delivered).
# Build first: cargo build --release --bin sendme --example broadcast
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$1"; shift
broadcast="${BROADCAST:-$(dirname "$bin")/examples/broadcast}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port="${PORT:-18490}"
url="http://127.0.0.1:$port"
env SENDME__SERVER__PORT=$port SENDME__STORE__PATH="$work/data" RUST_LOG=warn \
    SENDME__LIMITS__REQUESTS_PER_SECOND_PER_ACCOUNT=1000000 SENDME__LIMITS__MAX_RECIPIENTS_PER_REQUEST=1100000 \
    SENDME__PROVIDER__SIMULATED__RECEIPT_DELAY_MS=100 \
    SENDME__PROVIDER__SIMULATED__UNDELIVERED_RATE=0.01 \
    SENDME__PROVIDER__SIMULATED__PERMANENT_FAILURE_RATE=0.0002 \
    "$bin" >"$work/sendme.out" 2>"$work/sendme.err" &
pids+=($!)
server=$!
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
until grep -q ADMIN_TOKEN "$work/sendme.out" 2>/dev/null; do sleep 0.05; done
token="$(sed -n 's/^SENDME_DEMO_TOKEN=//p' "$work/sendme.out")"
admin="$(sed -n 's/^SENDME_ADMIN_TOKEN=//p' "$work/sendme.out")"
curl -s -X POST "$url/api/admin/accounts/0190d3e0-0000-7000-8000-00000000a001/credits" \
    -H "Authorization: Bearer $admin" -H "Content-Type: application/json" \
    -d '{"amount": 100000000}' >/dev/null
total=0 seed=0
for size in "$@"; do
    queues=()
    while [ "$total" -lt $((size * 1000000 - 500000)) ]; do
        seed=$((seed + 1))
        "$broadcast" --url "$url" --token "$token" --recipients 1075600 --seed "$seed" >"$work/b.out"
        echo "broadcast $seed: $(sed -n 's/^recipients\/s: *//p' "$work/b.out") recipients/s"
        queues+=("$(sed -n 's/^queueId: *//p' "$work/b.out")")
        total=$((total + $(sed -n 's/^accepted messages: *\([0-9]*\).*/\1/p' "$work/b.out")))
    done
    # Every message final: nothing queued, sending, or sent and waiting for its receipt.
    python3 - "$url" "$token" "${queues[@]}" <<'PY'
import json, sys, time, urllib.request
url, token, queues = sys.argv[1], sys.argv[2], sys.argv[3:]
for q in queues:
    request = urllib.request.Request(f"{url}/api/queues/{q}", headers={"Authorization": f"Bearer {token}"})
    while True:
        c = json.load(urllib.request.urlopen(request))["counts"]
        if c["queued"] + c["sending"] + c["sent"] + c["scheduled"] == 0:
            break
        time.sleep(0.5)
PY
    # Timed once the server is idle (its folds, flushes and compactions done): under 5 % of
    # a core over 2 s, waiting at most 10 minutes.
    waited=0
    for _ in $(seq 300); do
        a=$(ticks); sleep 2; b=$(ticks); waited=$((waited + 2))
        [ $((b - a)) -lt 10 ] && break
    done
    echo "== $total messages in one account, all final, server idle after ${waited} s ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg))"
    python3 load-tests/lookups.py "$url" "$token" "${SAMPLES:-200}" "$server"
    echo "data dir: $(du -sm "$work/data" | cut -f1) MiB"
    cpu=$(ticks)
    echo "server CPU since start: $((cpu / 100)) s, $((cpu * 10000 / total)) µs per message (accept, delivery, receipts, indexes, compactions); peak RSS $(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$server/status") MiB"
done

#!/usr/bin/env bash
# Delivery throughput: accept N messages, then time how long until every one is `sent`
# (durably, with claims and outcomes fsync'd) and `delivered`.
#
#   load-tests/delivery.sh [simulated|http] [N]
#
# simulated: the in-process simulated provider, no rate limit.
# http:      the mock provider process (src/bin/mock-provider.rs) over HTTP on 127.0.0.1,
#            which also posts a signed receipt per message.
# Needs release builds: cargo build --release --bin sendme --bin mock-provider --example broadcast
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-simulated}" n="${2:-100000}"
bin="${CARGO_TARGET_DIR:-target}/release"
work="$(mktemp -d)"
pids=()
# Each process is waited for before the data dir goes: a server still shutting down writes
# into it, and `rm -rf` then fails (and ends the run with its error).
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port=18480
env_args=(SENDME__SERVER__PORT=$port SENDME__STORE__PATH="$work/data" RUST_LOG=warn
          SENDME__LIMITS__REQUESTS_PER_SECOND_PER_ACCOUNT=1000000)
if [ "$kind" = http ]; then
    "$bin/mock-provider" --ids-file "$work/ids.txt" --dlr-url "http://127.0.0.1:$port/api/providers/mock/dlr" \
        --dlr-secret bench-secret >"$work/mock.out" &
    pids+=($!)
    until grep -q LISTENING "$work/mock.out" 2>/dev/null; do sleep 0.05; done
    mock="$(sed -n 's/^MOCK_PROVIDER_LISTENING=//p' "$work/mock.out")"
    env_args+=(SENDME__PROVIDER__KIND=http SENDME__PROVIDER__NAME=mock SENDME__PROVIDER__DLR_SECRET=bench-secret
               SENDME__PROVIDER__HTTP__URL="$mock/sms" SENDME__PROVIDER__CONCURRENCY=256)
else
    env_args+=(SENDME__PROVIDER__SIMULATED__RECEIPT_DELAY_MS=100)
fi
env "${env_args[@]}" "$bin/sendme" >"$work/sendme.out" 2>"$work/sendme.err" &
pids+=($!)
until grep -q ADMIN_TOKEN "$work/sendme.out" 2>/dev/null; do sleep 0.05; done
token="$(sed -n 's/^SENDME_DEMO_TOKEN=//p' "$work/sendme.out")"
admin="$(sed -n 's/^SENDME_ADMIN_TOKEN=//p' "$work/sendme.out")"
curl -s -X POST "http://127.0.0.1:$port/api/admin/accounts/0190d3e0-0000-7000-8000-00000000a001/credits" \
    -H "Authorization: Bearer $admin" -H "Content-Type: application/json" -d "{\"amount\": $((n * 2))}" >/dev/null
"$bin/examples/broadcast" --url "http://127.0.0.1:$port" --token "$token" --recipients "$n" >"$work/broadcast.out"
queue="$(sed -n 's/^queueId: *//p' "$work/broadcast.out")"
accepted="$(sed -n 's/^accepted messages: *\([0-9]*\).*/\1/p' "$work/broadcast.out")"
# One poller process (a curl and a python3 start per poll took ~15 % of the two cores).
python3 - "$kind" "$accepted" "http://127.0.0.1:$port/api/queues/$queue" "$token" <<'PY'
import json, sys, time, urllib.request
kind, n, url, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
start, sent_at = time.monotonic(), None
while True:
    c = json.load(urllib.request.urlopen(request))["counts"]
    now = time.monotonic()
    if sent_at is None and c["sent"] + c["delivered"] + c["undelivered"] + c["expired"] >= n:
        sent_at = now
    if c["delivered"] >= n:
        break
    time.sleep(0.02)
sent, done = sent_at - start, now - start
print(f"{kind}: {n} messages; all sent after {sent:.2f} s ({n/sent:,.0f} msg/s); "
      f"all delivered after {done:.2f} s ({n/done:,.0f} msg/s)")
PY

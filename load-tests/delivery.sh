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
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
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
start=$(date +%s.%N); sent_at=""
while :; do
    counts="$(curl -s "http://127.0.0.1:$port/api/queues/$queue" -H "Authorization: Bearer $token")"
    read -r sent delivered < <(python3 -c 'import json,sys; c=json.load(sys.stdin)["counts"]; print(c["sent"]+c["delivered"]+c["undelivered"]+c["expired"], c["delivered"])' <<<"$counts")
    now=$(date +%s.%N)
    if [ -z "$sent_at" ] && [ "$sent" -ge "$accepted" ]; then sent_at=$now; fi
    if [ "$delivered" -ge "$accepted" ]; then break; fi
    sleep 0.05
done
python3 - "$kind" "$accepted" "$start" "$sent_at" "$now" <<'PY'
import sys
kind, n, start, sent, done = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
print(f"{kind}: {n} messages; all sent after {sent-start:.2f} s ({n/(sent-start):,.0f} msg/s); "
      f"all delivered after {done-start:.2f} s ({n/(done-start):,.0f} msg/s)")
PY

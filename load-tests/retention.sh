#!/usr/bin/env bash
# Retention: N messages accepted and delivered, then purged and compacted; prints the data
# directory's size at each step and how long the purge and the compaction took.
#
#   load-tests/retention.sh [N]
#
# The messages are "old" because the purge runs with `--older-than-days 0` (every batch
# that has ended), which is what `retention.days` does to batches that old.
# Needs release builds: cargo build --release --bin sendme --example broadcast
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-1000000}"
bin="${CARGO_TARGET_DIR:-target}/release"
work="$(mktemp -d)"
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=18490
export SENDME__SERVER__PORT=$port SENDME__STORE__PATH="$work/data" RUST_LOG=warn \
       SENDME__LIMITS__REQUESTS_PER_SECOND_PER_ACCOUNT=1000000 \
       SENDME__PROVIDER__SIMULATED__RECEIPT_DELAY_MS=100
"$bin/sendme" >"$work/sendme.out" 2>"$work/sendme.err" &
pid=$!
until grep -q ADMIN_TOKEN "$work/sendme.out" 2>/dev/null; do sleep 0.05; done
token="$(sed -n 's/^SENDME_DEMO_TOKEN=//p' "$work/sendme.out")"
admin="$(sed -n 's/^SENDME_ADMIN_TOKEN=//p' "$work/sendme.out")"
curl -s -X POST "http://127.0.0.1:$port/api/admin/accounts/0190d3e0-0000-7000-8000-00000000a001/credits" \
    -H "Authorization: Bearer $admin" -H "Content-Type: application/json" -d "{\"amount\": $((n * 2))}" >/dev/null
"$bin/examples/broadcast" --url "http://127.0.0.1:$port" --token "$token" --recipients "$n" >"$work/broadcast.out"
queue="$(sed -n 's/^queueId: *//p' "$work/broadcast.out")"
accepted="$(sed -n 's/^accepted messages: *\([0-9]*\).*/\1/p' "$work/broadcast.out")"
python3 - "$accepted" "http://127.0.0.1:$port/api/queues/$queue" "$token" <<'PY'
import json, sys, time, urllib.request
n, url, token = int(sys.argv[1]), sys.argv[2], sys.argv[3]
request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
while json.load(urllib.request.urlopen(request))["counts"]["delivered"] < n:
    time.sleep(0.2)
PY
kill -TERM "$pid"; wait "$pid" || true; pid=
size() { du -sb "$work/data" | cut -f1; }
echo "messages: $accepted of $n recipients (all delivered); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "data dir after delivery: $(size) bytes"
"$bin/sendme" reconcile 2>/dev/null  # opens and closes the store: the journal flushed, no purge
echo "data dir reopened, nothing purged: $(size) bytes"
echo "purge: $("$bin/sendme" purge --older-than-days 0)"
echo "data dir after purge: $(size) bytes"
echo "compaction: $("$bin/sendme" purge --older-than-days 0 --compact)"
echo "data dir after compaction: $(size) bytes"

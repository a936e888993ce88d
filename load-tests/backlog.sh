#!/usr/bin/env bash
# A backlog held on disk: N messages queued in one account, `kill -9`, restart. Reports
# the restart time to /readyz, the peak RSS (VmHWM) while the backlog drains for DRAIN
# seconds (and how many messages were sent meanwhile), and the data directory's size.
#
#   load-tests/backlog.sh BINARY N [DRAIN_SECONDS] [LABEL]
#
# The backlog builds up behind a provider paced at 1 message/s (the simulated one); the
# restart runs the same binary with no rate limit, so the backlog drains as fast as the
# machine allows. Needs `cargo build --release --example broadcast` (the sends) besides
# BINARY; PORT (default 18731) is the server's port; the data directory (a few GB at 10 M) is made under /tmp and deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="$1" n="$2" drain="${3:-60}" label="${4:-$(basename "$bin")}"
broadcast="${CARGO_TARGET_DIR:-target}/release/examples/broadcast"
work="$(mktemp -d /tmp/sendme-backlog.XXXXXX)"
port="${PORT:-18731}"
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
common=(SENDME__SERVER__PORT=$port SENDME__STORE__PATH="$work/data" RUST_LOG=warn
        SENDME__LIMITS__REQUESTS_PER_SECOND_PER_ACCOUNT=1000000)

start() { # extra env...
    env "${common[@]}" "$@" "$bin" >"$work/sendme.out" 2>>"$work/sendme.err" &
    pid=$!
}
alive() { kill -0 "$pid" 2>/dev/null || { tail -5 "$work/sendme.err"; exit 1; }; }
ready() { curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; }
account() { curl -s "http://127.0.0.1:$port/api/account" -H "Authorization: Bearer $token"; }

start SENDME__PROVIDER__RATE_PER_SECOND=1
until grep -q ADMIN_TOKEN "$work/sendme.out" 2>/dev/null; do alive; sleep 0.05; done
token="$(sed -n 's/^SENDME_DEMO_TOKEN=//p' "$work/sendme.out")"
admin="$(sed -n 's/^SENDME_ADMIN_TOKEN=//p' "$work/sendme.out")"
curl -s -o /dev/null -X POST "http://127.0.0.1:$port/api/admin/accounts/0190d3e0-0000-7000-8000-00000000a001/credits" \
    -H "Authorization: Bearer $admin" -H "Content-Type: application/json" -d "{\"amount\": $((n * 2))}"

# Sends of up to 1,000,000 entries (~93 % unique) until N messages are queued.
queued=0 seed=1
while [ "$queued" -lt "$n" ]; do
    want=$(( (n - queued) * 100 / 92 + 1000 ))
    [ "$want" -gt 1000000 ] && want=1000000
    "$broadcast" --url "http://127.0.0.1:$port" --token "$token" --recipients "$want" --seed "$seed" >"$work/broadcast.out"
    got="$(sed -n 's/^accepted messages: *\([0-9]*\).*/\1/p' "$work/broadcast.out")"
    queued=$((queued + got)) seed=$((seed + 1))
done
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
data_bytes="$(du -sb "$work/data" | cut -f1)"

t0=$(date +%s.%N)
start
until ready; do alive; sleep 0.02; done
t1=$(date +%s.%N)
reserved0="$(account | python3 -c 'import json,sys; print(json.load(sys.stdin)["reserved"])')"
hwm=0
end=$(( $(date +%s) + drain ))
while [ "$(date +%s)" -lt "$end" ]; do
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    sleep 0.2
done
reserved1="$(account | python3 -c 'import json,sys; print(json.load(sys.stdin)["reserved"])')"
printf '%s: %d queued; restart to /readyz %.2f s; VmHWM %d MiB after %d s of draining (%d sent); data dir %d MiB\n' \
    "$label" "$queued" "$(echo "$t1 - $t0" | bc)" $((hwm / 1024)) "$drain" $((reserved0 - reserved1)) $((data_bytes / 1048576))

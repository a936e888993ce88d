#!/usr/bin/env bash
# Hostile bodies against a real SendMe: a 50 MB value in each field of a send, 50 MB on
# the small routes, 64 MiB of nesting, then eight 50 MB sends at once; prints, per request,
# the status, the time and the size of the answer, and the server's peak RSS at the end.
# Usage: load-tests/hostile-bodies.sh BINARY [PORT] [LABEL]   (needs curl and python3)
# BENCHMARKS.md ("Hostile bodies") has the figures and how they were taken.
set -u
bin=$(realpath "$1"); port=${2:-18801}; label=${3:-run}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
python3 - "$dir" <<'EOF'
import json, sys
d, big = sys.argv[1], "7" * (50 * 1024 * 1024)
def w(name, body): open(f"{d}/{name}.json", "w").write(json.dumps(body))
one = {"message": "hi", "contacts": ["3001234567"]}
w("contact", {"message": "hi", "contacts": [big]})
w("message", {"message": big, "contacts": ["3001234567"]})
for field in ("country", "type", "sendAt"):
    w(field, {**one, field: big})
w("unknown", {**one, big: 1})
w("tags", {"message": "hi", "tagIds": [big]})
n = 32 * 1024 * 1024 - 64
open(f"{d}/nested.json", "w").write('{"message": "hi", "zz": ' + "[" * n + "]" * n + "}")
EOF
SENDME__STORE__PATH=$dir/data SENDME__SERVER__PORT=$port SENDME__ROLE=api "$bin" serve >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
token=$(grep DEMO_TOKEN "$dir/out" | cut -d= -f2)
admin=$(grep ADMIN_TOKEN "$dir/out" | cut -d= -f2)
post() { # what path token body
    curl -s -o /dev/null -w "$label $1 %{http_code} %{time_total}s answer=%{size_download}B\n" \
        -X POST "http://127.0.0.1:$port$2" -H "Authorization: Bearer $3" \
        -H 'Content-Type: application/json' --data-binary "@$dir/$4.json"
}
send=/api/messages/sms/contacts
post "contacts[0]=50MB" $send "$token" contact
post "message=50MB" $send "$token" message
post "country=50MB" $send "$token" country
post "type=50MB" $send "$token" type
post "sendAt=50MB" $send "$token" sendAt
post "50MB-field-name" $send "$token" unknown
post "tagIds[0]=50MB" /api/messages/sms/tags "$token" tags
post "nested-64MiB" $send "$token" nested
post "/api/contacts-50MB" /api/contacts "$token" country
post "/api/tags-50MB" /api/tags "$token" country
post "/api/admin/accounts-50MB" /api/admin/accounts "$admin" country
post "dlr-50MB" /api/providers/simulated/dlr "$token" country
curls=()
for i in 1 2 3 4 5 6 7 8; do post "concurrent-$i" $send "$token" country & curls+=($!); done
wait "${curls[@]}"
echo "$label peak RSS $(grep VmHWM /proc/$pid/status | tr -s ' \t' ' ')"

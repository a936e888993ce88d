#!/usr/bin/env python3
"""Lookup latency against a running server: GET /api/messages by recipient and by status.

    load-tests/lookups.py URL TOKEN [SAMPLES [SERVER_PID]]

Picks SAMPLES recipients the account has messages for (from a few pages of the unfiltered
listing, which reads only a page), then times, over one kept-alive connection:
  - recipient: `?recipient=<number>&limit=100`, once per picked number;
  - status=<s>: `?status=<s>&limit=100`, the first page and the next ones through
    `nextCursor` (SAMPLES requests in all, starting over when the pages run out),
    for `failed` (rare) and `delivered` (most messages).
Five lookups of each kind go first, untimed (the first after a quiet spell opens tables and
fills caches). Prints p50 / p99 / max in milliseconds per lookup, as the client saw each
answer (request sent to body read), and with SERVER_PID the server's CPU time per lookup
(utime + stime from /proc/PID/stat over the series: unlike the latency, it does not move
with what else runs on the machine).
"""
import http.client
import os
import json
import sys
import time
import urllib.parse


def main():
    url, token = sys.argv[1], sys.argv[2]
    samples = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    pid = sys.argv[4] if len(sys.argv) > 4 else None

    def cpu_seconds():
        if pid is None:
            return 0.0
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    parsed = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port)
    headers = {"Authorization": f"Bearer {token}"}

    def get(path):
        start = time.perf_counter()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        elapsed = (time.perf_counter() - start) * 1000
        if resp.status != 200:
            sys.exit(f"{path}: {resp.status} {body[:200]!r}")
        return json.loads(body), elapsed

    recipients, cursor = [], None
    while len(recipients) < samples:
        page, _ = get("/api/messages?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
        recipients += [m["recipient"] for m in page["items"][:: max(1, 1000 // samples)]]
        cursor = page.get("nextCursor")
        if not cursor:
            break
    recipients = recipients[:samples]

    def report(name, times, found, cpu):
        times.sort()
        pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
        server = f"  server CPU={cpu * 1000 / len(times):6.2f} ms/lookup" if pid else ""
        print(f"{name:18} n={len(times):4}  p50={pick(0.50):8.2f} ms  p99={pick(0.99):8.2f} ms"
              f"  max={times[-1]:8.2f} ms  messages/answer={found / len(times):.1f}{server}",
              flush=True)

    # Warm up: the first lookups after a quiet spell open tables and fill caches.
    for r in recipients[:5]:
        get("/api/messages?limit=100&recipient=" + urllib.parse.quote(r))
        get("/api/messages?limit=100&status=failed")

    times, found, cpu = [], 0, cpu_seconds()
    for r in recipients:
        page, ms = get("/api/messages?limit=100&recipient=" + urllib.parse.quote(r))
        assert all(m["recipient"] == r for m in page["items"]) and page["items"], r
        times.append(ms)
        found += len(page["items"])
    report("recipient", times, found, cpu_seconds() - cpu)

    for status in ["failed", "delivered"]:
        times, found, cursor, cpu = [], 0, None, cpu_seconds()
        while len(times) < samples:
            path = f"/api/messages?limit=100&status={status}" + (f"&cursor={cursor}" if cursor else "")
            page, ms = get(path)
            assert all(m["status"] == status for m in page["items"]), status
            times.append(ms)
            found += len(page["items"])
            cursor = page.get("nextCursor")
        report(f"status={status}", times, found, cpu_seconds() - cpu)


if __name__ == "__main__":
    main()

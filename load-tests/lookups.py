#!/usr/bin/env python3
"""Lookup latency against a running server: GET /api/messages by recipient and by status.

    load-tests/lookups.py URL TOKEN [SAMPLES]

Picks SAMPLES recipients the account has messages for (from a few pages of the unfiltered
listing, which reads only a page), then times, over one kept-alive connection:
  - recipient: `?recipient=<number>&limit=100`, once per picked number;
  - status=<s>: `?status=<s>&limit=100`, the first page and the next ones through
    `nextCursor` (SAMPLES requests in all, starting over when the pages run out),
    for `failed` (rare) and `delivered` (most messages).
Prints p50 / p99 / max in milliseconds per lookup, as the client saw each answer (request
sent to body read).
"""
import http.client
import json
import sys
import time
import urllib.parse


def main():
    url, token = sys.argv[1], sys.argv[2]
    samples = int(sys.argv[3]) if len(sys.argv) > 3 else 200
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

    def report(name, times, found):
        times.sort()
        pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
        print(f"{name:18} n={len(times):4}  p50={pick(0.50):8.2f} ms  p99={pick(0.99):8.2f} ms"
              f"  max={times[-1]:8.2f} ms  messages/answer={found / len(times):.1f}", flush=True)

    times, found = [], 0
    for r in recipients:
        page, ms = get("/api/messages?limit=100&recipient=" + urllib.parse.quote(r))
        assert all(m["recipient"] == r for m in page["items"]) and page["items"], r
        times.append(ms)
        found += len(page["items"])
    report("recipient", times, found)

    for status in ["failed", "delivered"]:
        times, found, cursor = [], 0, None
        while len(times) < samples:
            path = f"/api/messages?limit=100&status={status}" + (f"&cursor={cursor}" if cursor else "")
            page, ms = get(path)
            assert all(m["status"] == status for m in page["items"]), status
            times.append(ms)
            found += len(page["items"])
            cursor = page.get("nextCursor")
        report(f"status={status}", times, found)


if __name__ == "__main__":
    main()

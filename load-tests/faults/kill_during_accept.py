#!/usr/bin/env python3
"""kill -9 during a 1,000,000-recipient accept, with an Idempotency-Key (RELIABILITY.md).

For each kill instant: a fresh data directory, SendMe (release build, role `api`, so the
balance moves only by reservations), the demo account topped up, ONE send of N recipients
with a key, `kill -9` of SendMe at a fraction of the time an unkilled send of the same
request takes here (measured first), a restart on the same data directory, and the client's
retry with the same key. The books must show one batch: the retry answers 201 with N
messages, and the account's reservation is exactly one batch's cost (never two).

    cargo build --release --bin sendme
    python3 load-tests/faults/kill_during_accept.py [N] [fractions...]

Prints one line per kill instant. Uses 127.0.0.1 only; stops only the processes it started.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
SENDME = os.path.join(TARGET, "release", "sendme")
PORT = 18490
BASE = f"http://127.0.0.1:{PORT}"
KEY = "kill-during-accept"


def start(data):
    env = dict(os.environ, SENDME_CONFIG_DIR=os.path.join(ROOT, "config"),
               SENDME__SERVER__PORT=str(PORT), SENDME__STORE__PATH=data,
               SENDME__ROLE="api", SENDME__DEMO__SEED="true", RUST_LOG="warn")
    p = subprocess.Popen([SENDME], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for line in p.stdout:
        if line.startswith(b"SENDME_LISTENING="):
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p
    raise SystemExit("sendme exited before listening")


def token(kind):
    env = dict(os.environ, SENDME_CONFIG_DIR=os.path.join(ROOT, "config"))
    return subprocess.check_output([SENDME, "token", kind], env=env,
                                   stderr=subprocess.DEVNULL).decode().strip()


def call(method, path, tok, body=None, timeout=600):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(BASE + path, data=data, method=method, headers={
        "Authorization": "Bearer " + tok, "Content-Type": "application/json",
        "Idempotency-Key": KEY})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def books(member):
    _, acc = call("GET", "/api/account", member)
    return acc["balance"], acc["reserved"]


def fresh(n):
    data = tempfile.mkdtemp(prefix="sendme-kill-")
    p = start(data)
    member, admin = token("--demo"), token("--admin")
    _, acc = call("GET", "/api/account", member)
    call("POST", f"/api/admin/accounts/{acc['id']}/credits", admin, {"amount": 3 * n})
    return data, p, member


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    fractions = [float(f) for f in sys.argv[2:]] or [0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    contacts = ["3%02d%07d" % (10 + i % 14, i) for i in range(n)]
    body = json.dumps({"message": "Kill during accept", "contacts": contacts}).encode()

    data, p, member = fresh(n)
    t0 = time.monotonic()
    status, answer = call("POST", "/api/messages/sms/contacts", member, body)
    took = time.monotonic() - t0
    assert status == 201 and len(answer["messages"]) == n, (status, str(answer)[:200])
    p.send_signal(signal.SIGKILL); p.wait(); shutil.rmtree(data)
    print(f"unkilled: {n} recipients answered 201 in {took:.2f} s")

    for f in fractions:
        data, p, member = fresh(n)
        before = books(member)
        result = {}

        def first_request():
            try:
                result["first"] = call("POST", "/api/messages/sms/contacts", member, body)
            except OSError:  # the connection died with the process
                pass

        t = threading.Thread(target=first_request, daemon=True)
        t0 = time.monotonic()
        t.start()
        time.sleep(max(0.0, f * took - (time.monotonic() - t0)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        t.join(timeout=5)
        first = result.get("first", (None, None))[0] if "first" in result else None
        p = start(data)
        status, answer = call("POST", "/api/messages/sms/contacts", member, body)
        balance, reserved = books(member)
        charged = before[0] - balance
        first_q = result["first"][1].get("queueId") if first == 201 else None
        same = "same queue" if first_q and first_q == answer.get("queueId") else (
            "first not answered" if first != 201 else "DIFFERENT QUEUE")
        ok = status == 201 and len(answer["messages"]) == n and charged == n and reserved == n
        print(f"kill at {f:.2f}x ({f * took:.2f} s): first {first or 'cut off'}, retry {status} "
              f"with {len(answer.get('messages', []))} messages ({same}); charged {charged} "
              f"for {n}, reserved {reserved}: {'one batch' if ok else 'BOOKS WRONG'}")
        p.send_signal(signal.SIGKILL); p.wait(); shutil.rmtree(data)
        if not ok:
            sys.exit(1)


if __name__ == "__main__":
    main()

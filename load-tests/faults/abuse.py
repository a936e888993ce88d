#!/usr/bin/env python3
"""Abusive clients against a running SendMe (RELIABILITY.md, "Abuse"): many idle
connections, a slow request head (slowloris), a slow body, while a normal client keeps
sending. Prints what each abusive client saw and the normal client's latency meanwhile.

    cargo build --release --bin sendme
    python3 load-tests/faults/abuse.py [IDLE_CONNECTIONS]

Starts its own SendMe (fresh data dir, 127.0.0.1:18495) and stops only that process.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
SENDME = os.path.join(TARGET, "release", "sendme")
PORT = 18495


def start():
    env = dict(os.environ, SENDME_CONFIG_DIR=os.path.join(ROOT, "config"),
               SENDME__SERVER__PORT=str(PORT), SENDME__STORE__PATH=tempfile.mkdtemp() + "/data",
               SENDME__ROLE="api", RUST_LOG="error")
    p = subprocess.Popen([SENDME], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for line in p.stdout:
        if line.startswith(b"SENDME_LISTENING="):
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p
    raise SystemExit("sendme did not start")


def token():
    env = dict(os.environ, SENDME_CONFIG_DIR=os.path.join(ROOT, "config"))
    return subprocess.check_output([SENDME, "token", "--demo"], env=env,
                                   stderr=subprocess.DEVNULL).decode().strip()


def normal_sends(tok, seconds, out):
    """A well-behaved client: one 10-recipient send after another; latencies in ms."""
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        body = json.dumps({"message": "abuse test", "contacts":
                           ["3%02d%07d" % (10 + k % 14, i * 10 + k) for k in range(10)]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{PORT}/api/messages/sms/contacts", data=body,
                                     headers={"Authorization": "Bearer " + tok,
                                              "Content-Type": "application/json"})
        t = time.monotonic()
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 201
        out.append((time.monotonic() - t) * 1000)
        i += 1
        time.sleep(0.01)


def closed_after(sock, limit, t):
    """Seconds from `t` until the server closed `sock` (EOF or a response), or None."""
    sock.settimeout(limit)
    try:
        data = sock.recv(4096)
        return time.monotonic() - t, data.split(b"\r\n")[0].decode(errors="replace")
    except (socket.timeout, TimeoutError):
        return None, ""
    except ConnectionResetError:
        return time.monotonic() - t, "reset"


def trickle(sock, payload, every):
    """Sends `payload` one byte every `every` s until the server closes the socket."""
    for b in payload:
        try:
            sock.sendall(bytes([b]))
        except OSError:
            return
        time.sleep(every)


def main():
    idle_n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    p = start()
    tok = token()
    try:
        # Baseline latency, alone.
        alone = []
        normal_sends(tok, 3, alone)
        # Idle connections: connect and say nothing.
        idle = []
        for _ in range(idle_n):
            s = socket.create_connection(("127.0.0.1", PORT))
            idle.append(s)
        # Slowloris: a request head one byte a second.
        slow_head = socket.create_connection(("127.0.0.1", PORT))
        head_started = time.monotonic()
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
        threading.Thread(target=trickle, args=(slow_head, head, 1.0), daemon=True).start()
        # A slow body: headers at once, the body one byte a second (on a small route: 10 s
        # to read a body; the send routes allow 120 s).
        slow_body = socket.create_connection(("127.0.0.1", PORT))
        body_started = time.monotonic()
        slow_body.sendall(("POST /api/contacts HTTP/1.1\r\nHost: x\r\n"
                           f"Authorization: Bearer {tok}\r\nContent-Type: application/json\r\n"
                           "Content-Length: 200\r\n\r\n").encode())
        threading.Thread(target=trickle, args=(slow_body, b"{" + b" " * 199, 1.0), daemon=True).start()
        during = []
        sender = threading.Thread(target=normal_sends, args=(tok, 15, during))
        sender.start()
        head_closed = closed_after(slow_head, 30, head_started)
        body_closed = closed_after(slow_body, 30, body_started)
        sender.join()
        still_open = 0
        for s in idle:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    continue
            except BlockingIOError:
                still_open += 1
            except OSError:
                continue
        rss = int(open(f"/proc/{p.pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024
        q = lambda xs, f: sorted(xs)[min(len(xs) - 1, int(len(xs) * f))]
        print(f"normal client alone: {len(alone)} sends, p50 {q(alone, .5):.1f} ms, p99 {q(alone, .99):.1f} ms")
        print(f"normal client beside {idle_n} idle connections, a slowloris and a slow body: "
              f"{len(during)} sends, p50 {q(during, .5):.1f} ms, p99 {q(during, .99):.1f} ms, all 201")
        print(f"slowloris (head 1 byte/s): closed after {head_closed[0]:.1f} s ({head_closed[1] or 'no answer'})"
              if head_closed[0] else "slowloris: still open after 30 s")
        print(f"slow body (1 byte/s, POST /api/contacts): answered after {body_closed[0]:.1f} s: {body_closed[1]}"
              if body_closed[0] else "slow body: still open after 30 s")
        print(f"idle connections still open after ~20 s: {still_open} of {idle_n}; server RSS {rss} MiB")
        for s in idle:
            s.close()
    finally:
        p.kill()
        p.wait()


if __name__ == "__main__":
    main()

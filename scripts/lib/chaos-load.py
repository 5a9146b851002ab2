#!/usr/bin/env python3
"""Load client, sink and checker for scripts/chaos (Python 3 standard library only).

  chaos-load.py load  --url URL --secret-file F --prefix P --duration S [--workers N] [--rate R] --out F
      Send signed GitHub deliveries (unique X-GitHub-Delivery ids P-w-n) continuously, one connection
      per request (as GitHub does), for S seconds. Records every id that got a 2xx, every refused
      connection (ECONNREFUSED), every other failure (status or error), and latencies. Writes JSON.
  chaos-load.py sink  --port N --log F
      HTTP sink for a forward action: appends each request's X-GitHub-Delivery to F, answers 200.
  chaos-load.py rows  --sqlite PATH
      Print "delivery_id<TAB>state<TAB>body-ok" for every stored event (read-only).
  chaos-load.py check --results F --rows F --name NAME [--processed] [--sink-log F]
                      [--max-failed N] [--min-failed N] [--only-status CODE] [--max-fail-latency S] [--table F]
      Compare what was acknowledged with what is stored; print a table row; exit 1 if a promise
      is broken: lost > 0, duplicated > 0, refused > 0 (unless --allow-refused), failed > --max-failed,
      a failure other than --only-status, or (--processed) an acknowledged event not processed.
"""
import argparse
import hashlib
import hmac
import json
import os
import socket
import sqlite3
import sys
import threading
import time

HEADER = "%-34s %6s %6s %6s %5s %5s %7s %6s %8s  %s"


def load(a):
    secret = open(a.secret_file, "rb").read().rstrip(b"\n")
    rest = a.url.split("://", 1)[1]
    hostport, path = rest.split("/", 1)
    host, port = hostport.rsplit(":", 1)
    port = int(port)
    path = "/" + path
    deadline = time.monotonic() + a.duration
    lock = threading.Lock()
    res = {"sent": 0, "acked": [], "refused": 0, "failed": {}, "failed_ids": [],
           "latencies_ok": [], "latency_max": 0.0, "latency_max_ok": 0.0, "latency_max_fail": 0.0}
    interval = a.workers / a.rate if a.rate > 0 else 0.0
    pad = "x" * 700

    def one(did, n):
        body = json.dumps({"ref": "refs/heads/main", "chaos": did, "n": n, "pad": pad}).encode()
        sig = hmac.new(secret, body, hashlib.sha256).hexdigest()
        head = ("POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: GitHub-Hookshot/chaos\r\n"
                "Content-Type: application/json\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: %s\r\n"
                "X-Hub-Signature-256: sha256=%s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % (path, hostport, did, sig, len(body))).encode()
        t0 = time.monotonic()
        try:
            s = socket.create_connection((host, port), timeout=a.timeout)
        except ConnectionRefusedError:
            return "refused", None, time.monotonic() - t0
        except OSError as e:
            return "connect-" + type(e).__name__, None, time.monotonic() - t0
        try:
            s.settimeout(a.timeout)
            s.sendall(head + body)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            return "timeout", None, time.monotonic() - t0
        except OSError as e:
            return type(e).__name__, None, time.monotonic() - t0
        finally:
            s.close()
        dt = time.monotonic() - t0
        line = data.split(b"\r\n", 1)[0].split(b" ")
        if len(line) < 2 or not line[1].isdigit():
            return "no-response", None, dt
        return "status", int(line[1]), dt

    def worker(w):
        n = 0
        nxt = time.monotonic()
        while time.monotonic() < deadline:
            n += 1
            did = "%s-%d-%d" % (a.prefix, w, n)
            kind, status, dt = one(did, n)
            with lock:
                res["sent"] += 1
                res["latency_max"] = max(res["latency_max"], dt)
                if kind == "status" and 200 <= status < 300:
                    res["acked"].append(did)
                    res["latencies_ok"].append(dt)
                    res["latency_max_ok"] = max(res["latency_max_ok"], dt)
                elif kind == "refused":
                    res["refused"] += 1
                else:
                    k = str(status) if kind == "status" else kind
                    res["failed"][k] = res["failed"].get(k, 0) + 1
                    res["failed_ids"].append(did)
                    res["latency_max_fail"] = max(res["latency_max_fail"], dt)
            if interval:
                nxt += interval
                now = time.monotonic()
                if nxt > now:
                    time.sleep(nxt - now)
                elif now - nxt > 1.0:
                    nxt = now

    ts = [threading.Thread(target=worker, args=(w,)) for w in range(a.workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    lat = sorted(res.pop("latencies_ok"))
    res["latency_p99_ok"] = lat[int(len(lat) * 0.99)] if lat else 0.0
    with open(a.out + ".tmp", "w") as f:
        json.dump(res, f)
    os.rename(a.out + ".tmp", a.out)
    print("load %s: sent %d, 2xx %d, refused %d, failed %s, max latency %.3fs"
          % (a.prefix, res["sent"], len(res["acked"]), res["refused"], res["failed"], res["latency_max"]),
          file=sys.stderr)


def sink(a):
    import http.server

    lock = threading.Lock()
    out = open(a.log, "a")

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(n)
            with lock:
                out.write((self.headers.get("X-GitHub-Delivery") or "-") + "\n")
                out.flush()
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    class S(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):
            pass  # a forwarder killed mid-request resets its connection: expected here

    srv = S(("127.0.0.1", a.port), H)
    srv.serve_forever()


def rows(a):
    c = sqlite3.connect("file:%s?mode=ro" % a.sqlite, uri=True, timeout=10)
    # Bodies are in their own table since schema 6.
    for did, state, body in c.execute(
            "SELECT delivery_id, state, b.body FROM events JOIN event_bodies b ON b.event_id = id"):
        ok = 1
        try:
            ok = 1 if json.loads(bytes(body))["chaos"] == did else 0
        except Exception:
            ok = 0
        print("%s\t%s\t%d" % (did, state, ok))


def check(a):
    r = json.load(open(a.results))
    acked = r["acked"]
    failed_ids = set(r["failed_ids"])
    counts, states, bad_body = {}, {}, 0
    for line in open(a.rows):
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 2:
            continue
        did = parts[0]
        if not did.startswith(a.prefix + "-"):
            continue
        counts[did] = counts.get(did, 0) + 1
        states[did] = parts[1]
        if len(parts) > 2 and parts[2] != "1":
            bad_body += 1
    stored = len(counts)
    lost = [d for d in acked if d not in counts]
    dups = sum(n - 1 for n in counts.values() if n > 1)
    nfailed = sum(r["failed"].values())
    problems = []
    if lost:
        problems.append("%d acknowledged but not stored (e.g. %s)" % (len(lost), lost[:3]))
    if dups:
        problems.append("%d duplicate rows" % dups)
    if bad_body:
        problems.append("%d stored bodies do not match their delivery" % bad_body)
    if r["refused"] and not a.allow_refused:
        problems.append("%d refused connections" % r["refused"])
    if a.max_failed is not None and nfailed > a.max_failed:
        problems.append("%d failed requests %s (at most %d allowed)" % (nfailed, r["failed"], a.max_failed))
    if a.only_status:
        other = {k: v for k, v in r["failed"].items() if k != a.only_status}
        if other:
            problems.append("failures other than %s: %s" % (a.only_status, other))
    if a.min_failed and nfailed < a.min_failed:
        problems.append("the fault never showed: %d failed requests (want >= %d)" % (nfailed, a.min_failed))
    if a.max_fail_latency is not None and r["latency_max_fail"] > a.max_fail_latency:
        problems.append("a refusal took %.2fs (want <= %.1fs)" % (r["latency_max_fail"], a.max_fail_latency))
    if a.max_latency is not None and r["latency_max"] > a.max_latency:
        problems.append("an answer took %.2fs (want <= %.1fs)" % (r["latency_max"], a.max_latency))
    if a.min_acked and len(acked) < a.min_acked:
        problems.append("only %d acknowledged (want >= %d)" % (len(acked), a.min_acked))
    if a.processed:
        unprocessed = [d for d in acked if states.get(d) != "done"]
        if unprocessed:
            problems.append("%d acknowledged not processed (e.g. %s: %s)"
                            % (len(unprocessed), unprocessed[0], states.get(unprocessed[0])))
    if a.sink_log:
        seen = set(l.strip() for l in open(a.sink_log))
        missing = [d for d in acked if d not in seen]
        if missing:
            problems.append("%d acknowledged never reached the sink" % len(missing))
    stored_refused = len([d for d in failed_ids if d in counts])
    extra = []
    if stored_refused:
        extra.append("%d unacknowledged were stored anyway (answer lost)" % stored_refused)
    if r["failed"]:
        extra.append("failures %s" % r["failed"])
    verdict = "PASS" if not problems else "FAIL: " + "; ".join(problems)
    fail_text = "%d" % nfailed
    row = HEADER % (a.name, r["sent"], len(acked), stored, len(lost), dups, r["refused"], fail_text,
                    "%.2fs" % r["latency_max"], verdict + ("  (" + "; ".join(extra) + ")" if extra else ""))
    print(row)
    if a.table:
        with open(a.table, "a") as f:
            f.write(row + "\n")
    sys.exit(0 if not problems else 1)


def header(_a):
    print(HEADER % ("scenario", "sent", "acked", "stored", "lost", "dup", "refused", "failed",
                    "max-lat", "verdict"))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("load")
    l.add_argument("--url", required=True)
    l.add_argument("--secret-file", required=True)
    l.add_argument("--prefix", required=True)
    l.add_argument("--duration", type=float, required=True)
    l.add_argument("--workers", type=int, default=4)
    l.add_argument("--rate", type=float, default=100.0, help="requests per second, all workers")
    l.add_argument("--timeout", type=float, default=20.0)
    l.add_argument("--out", required=True)
    s = sub.add_parser("sink")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--log", required=True)
    w = sub.add_parser("rows")
    w.add_argument("--sqlite", required=True)
    c = sub.add_parser("check")
    c.add_argument("--results", required=True)
    c.add_argument("--rows", required=True)
    c.add_argument("--prefix", required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--processed", action="store_true")
    c.add_argument("--sink-log")
    c.add_argument("--max-failed", type=int)
    c.add_argument("--only-status")
    c.add_argument("--min-acked", type=int, default=1)
    c.add_argument("--min-failed", type=int, default=0)
    c.add_argument("--max-fail-latency", type=float)
    c.add_argument("--max-latency", type=float)
    c.add_argument("--allow-refused", action="store_true")
    c.add_argument("--table")
    sub.add_parser("header")
    a = p.parse_args()
    {"load": load, "sink": sink, "rows": rows, "check": check, "header": header}[a.cmd](a)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A Tollgate webhook consumer, written from the Standard Webhooks
specification alone (https://www.standardwebhooks.com/): it checks every
delivery's signature and timestamp, processes each `webhook-id` once, and
answers 2xx only for what it has safely recorded.

    python3 consumer.py --secret whsec_... --port 8099 --out events.jsonl
    python3 consumer.py --public-key whpk_... --port 8099 --out events.jsonl

`v1` (HMAC-SHA256) needs nothing beyond the standard library; `v1a`
(Ed25519) needs the `cryptography` package. Each accepted event is one line
of --out: {"webhook_id", "type", "seq", "receipt_id", "duplicate": false},
written and flushed before the 2xx. A redelivered id is answered 2xx again
and recorded with "duplicate": true, never processed twice.

The options after --out make it misbehave on purpose, for tests: answer
503 (with Retry-After) to the first N deliveries, 410 Gone to all, wait
before answering, hold deliveries after the first N until a file exists, or
stay down (its port taken, connections refused) until a file exists. With
--port 0 it takes a free port and prints it; --key-file lets a test start
it before the endpoint (and so its key) exists.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECONDS = 5 * 60


class Invalid(Exception):
    pass


def parse_key(text):
    """A `whsec_` secret or a `whpk_` public key, ready to verify with."""
    if text.startswith("whsec_"):
        return ("v1", base64.b64decode(text[len("whsec_"):]))
    if not text.startswith("whpk_"):
        raise ValueError("a key is whsec_ or whpk_, and base64")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = base64.b64decode(text[len("whpk_"):])
    return ("v1a", Ed25519PublicKey.from_public_bytes(raw))


def load_key(args):
    if args.secret:
        if not args.secret.startswith("whsec_"):
            sys.exit("--secret is whsec_ and base64")
        return parse_key(args.secret)
    if args.public_key:
        if not args.public_key.startswith("whpk_"):
            sys.exit("--public-key is whpk_ and base64")
        return parse_key(args.public_key)
    return None


def wait_for_file(path, seconds):
    """Whether `path` exists within `seconds`."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def verify(key, msg_id, timestamp, body, header):
    """Raises Invalid unless one signature of `header` verifies."""
    if not msg_id or "." in msg_id:
        raise Invalid("bad webhook-id")
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        raise Invalid("bad webhook-timestamp")
    if abs(time.time() - ts) > TOLERANCE_SECONDS:
        raise Invalid("webhook-timestamp outside the tolerance")
    content = f"{msg_id}.{timestamp}.".encode() + body
    scheme, material = key
    for part in (header or "").split(" "):
        version, _, sig = part.partition(",")
        if version != scheme:
            continue
        try:
            given = base64.b64decode(sig, validate=True)
        except ValueError:
            continue
        if scheme == "v1":
            expected = hmac.new(material, content, hashlib.sha256).digest()
            if hmac.compare_digest(expected, given):
                return
        else:
            try:
                material.verify(given, content)
                return
            except Exception:
                continue
    raise Invalid(f"no {scheme} signature verifies")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    k = p.add_mutually_exclusive_group(required=True)
    k.add_argument("--secret", help="the endpoint's v1 secret, whsec_...")
    k.add_argument("--public-key", help="the endpoint's v1a public key, whpk_...")
    k.add_argument("--key-file", help="a file holding the secret or public key, read at the first "
                   "delivery (waiting for it to appear)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--out", required=True, help="JSON Lines of accepted events")
    p.add_argument("--fail-first", type=int, default=0, help="answer 503 to the first N deliveries")
    p.add_argument("--retry-after", type=int, default=0, help="with --fail-first: the Retry-After seconds")
    p.add_argument("--gone", action="store_true", help="answer 410 Gone to every delivery")
    p.add_argument("--delay-ms", type=int, default=0, help="wait before answering")
    p.add_argument("--hold-after", type=int, default=-1,
                   help="once N deliveries are recorded, hold each further one (unanswered) "
                   "until the --release file exists; --release + '.held' shows one is held")
    p.add_argument("--release", help="with --hold-after: the file that releases held deliveries")
    p.add_argument("--listen-when", help="take the port at once (printing 'bound to PORT') but "
                   "listen only once this file exists: until then connections are refused, "
                   "as to a consumer that is down")
    args = p.parse_args()
    if args.hold_after >= 0 and not args.release:
        sys.exit("--hold-after needs --release")
    keys = {"key": load_key(args)}
    lock = threading.Lock()
    seen = set()
    counter = {"requests": 0, "recorded": 0}

    def key():
        with lock:
            if keys["key"] is None and wait_for_file(args.key_file, 60):
                with open(args.key_file, encoding="utf-8") as f:
                    keys["key"] = parse_key(f.read().strip())
            return keys["key"]

    # What was processed before a restart stays processed.
    try:
        with open(args.out, encoding="utf-8") as f:
            seen.update(json.loads(line)["webhook_id"] for line in f if line.strip())
    except FileNotFoundError:
        pass
    out = open(args.out, "a", encoding="utf-8")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, headers=()):
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                counter["requests"] += 1
                n = counter["requests"]
            if args.delay_ms:
                time.sleep(args.delay_ms / 1000)
            if args.hold_after >= 0:
                with lock:
                    hold = counter["recorded"] >= args.hold_after
                if hold and not os.path.exists(args.release):
                    open(args.release + ".held", "w").close()
                    wait_for_file(args.release, 3600)
            if args.gone:
                return self.answer(410)
            if n <= args.fail_first:
                headers = [("retry-after", str(args.retry_after))] if args.retry_after else []
                return self.answer(503, headers)
            msg_id = self.headers.get("webhook-id")
            try:
                verify(key(), msg_id, self.headers.get("webhook-timestamp"), body,
                       self.headers.get("webhook-signature"))
                event = json.loads(body)
            except (Invalid, ValueError, TypeError) as e:
                sys.stderr.write(f"refused {msg_id}: {e}\n")
                return self.answer(400)
            data = event.get("data", {})
            with lock:
                duplicate = msg_id in seen
                seen.add(msg_id)
                counter["recorded"] += 1
                out.write(json.dumps({
                    "webhook_id": msg_id,
                    "type": event.get("type"),
                    "seq": data.get("seq"),
                    "receipt_id": data.get("receipt_id"),
                    "duplicate": duplicate,
                }) + "\n")
                out.flush()
            self.answer(204)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler, bind_and_activate=False)
    server.server_bind()
    port = server.server_address[1]
    if args.listen_when:
        # Bound, not listening: the port is ours, and connections to it
        # are refused until the file appears.
        print(f"bound to {port}", flush=True)
        wait_for_file(args.listen_when, 24 * 3600)
        server.server_activate()
    else:
        server.server_activate()
        print(f"listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

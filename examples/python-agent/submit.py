#!/usr/bin/env python3
"""Sign an intent and submit it to a Tollgate gateway, as an agent written
in Python would: no Tollgate code, only `cryptography` (Ed25519) and
`rfc8785` (canonical JSON).

    submit.py --url http://127.0.0.1:8080 --key tollgate-data/demo/agent.jwk \
        --envelope refund.envelope.json intent.json

The intent payload's `issued_at`, when missing or "NOW", is set to the
current time. The signed envelope is written to --envelope before it is
sent; run again with the same --envelope (a retry after a timeout) and the
same bytes are sent, so the gateway answers with the stored entry instead
of a conflict, however long ago the intent was decided.

A `409 in-flight` (the same intent is being decided now) and a `503` (the
gateway is busy or stopping) are retried after the `Retry-After` they
carry, as is a lost connection, until --give-up-after seconds have passed:
every retry sends the same bytes, so nothing runs twice. When the target
had the intent and has not answered yet (`outcome.status` "unknown"), it
asks `GET /v1/intents/{agent}/{intent_id}?wait=` until the gateway has
reconciled the outcome, and prints that state too.

Prints the ledger entry of the receipt. Exit status: 0 pass, 3 escalate,
4 block; 1 when the gateway refuses the intent (its problem document is
printed), 2 when it cannot be reached.
"""

import argparse
import base64
import datetime
import json
import os
import sys
import time
import urllib.error
import urllib.request

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(jwk, payload):
    """The envelope: the payload and an Ed25519 signature over the domain
    tag, a line feed and the payload's canonical JSON (RFC 8785)."""
    key = Ed25519PrivateKey.from_private_bytes(b64u_decode(jwk["d"]))
    message = b"tollgate.intent.v1\n" + rfc8785.dumps(payload)
    signature = {"alg": "EdDSA", "kid": jwk["kid"], "sig": b64u(key.sign(message))}
    return {"payload": payload, "signature": signature}


def envelope(args):
    if args.envelope and os.path.exists(args.envelope):
        with open(args.envelope, "rb") as f:
            return f.read()
    with open(args.intent) as f:
        payload = json.load(f)
    if payload.get("issued_at", "NOW") == "NOW":
        now = datetime.datetime.now(datetime.timezone.utc)
        payload["issued_at"] = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with open(args.key) as f:
        body = rfc8785.dumps(sign(json.load(f), payload))
    if args.envelope:
        # Kept before it is sent, so that a retry sends the same bytes.
        partial = args.envelope + ".partial"
        with open(partial, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, args.envelope)
    return body


def retry_after(headers, default=1):
    """Seconds to wait, from a Retry-After in seconds (the gateway's form)."""
    try:
        return max(0, min(int(headers.get("Retry-After", default)), 60))
    except ValueError:
        return default


def send(url, body, give_up_after):
    """POSTs the envelope, retrying what the gateway says to retry."""
    deadline = time.monotonic() + give_up_after
    while True:
        request = urllib.request.Request(
            url + "/v1/intents",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.read()
        except urllib.error.HTTPError as e:
            # A problem document (RFC 9457): type, title, status, detail.
            problem = e.read().decode()
            kind = json.loads(problem).get("type", "") if problem.startswith("{") else ""
            again = e.code == 503 or (e.code == 409 and kind.endswith(":in-flight"))
            if not again or time.monotonic() >= deadline:
                print(problem, file=sys.stderr)
                sys.exit(1)
            time.sleep(retry_after(e.headers))
        except (urllib.error.URLError, OSError) as e:
            # No answer: the same bytes again are safe.
            if time.monotonic() >= deadline:
                print(f"cannot reach {url}: {getattr(e, 'reason', e)}", file=sys.stderr)
                sys.exit(2)
            time.sleep(1)


def settled(url, payload, give_up_after):
    """The intent's state once its outcome is no longer unknown (or the
    last one seen when --give-up-after has passed)."""
    deadline = time.monotonic() + give_up_after
    path = f"{url}/v1/intents/{payload['agent']}/{payload['intent_id']}?wait=30"
    headers = {}
    if os.environ.get("TOLLGATE_READ_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["TOLLGATE_READ_TOKEN"]
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(path, headers=headers),
                                        timeout=60) as answer:
                state = json.loads(answer.read())
            if state["status"] != "unknown" or time.monotonic() >= deadline:
                return state
        except urllib.error.HTTPError as e:
            if e.code != 503 or time.monotonic() >= deadline:
                raise
            time.sleep(retry_after(e.headers))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=os.environ.get("TOLLGATE_URL", "http://127.0.0.1:8080"),
                    help="the gateway (default: $TOLLGATE_URL, else http://127.0.0.1:8080)")
    ap.add_argument("--key", required=True)
    ap.add_argument("--envelope")
    ap.add_argument("--give-up-after", type=int, default=120,
                    help="seconds to keep retrying and waiting (default 120)")
    ap.add_argument("intent")
    args = ap.parse_args()
    entry = send(args.url, envelope(args), args.give_up_after)
    print(entry.decode())
    receipt = json.loads(entry)["receipt"]
    if receipt["outcome"]["status"] == "unknown":
        # The target had it and has not answered: the gateway sends it again
        # with the same idempotency key until it does, and records the answer.
        state = settled(args.url, receipt["subject"]["payload"], args.give_up_after)
        print(json.dumps(state))
    verdict = receipt["decision"]["verdict"]
    sys.exit({"pass": 0, "escalate": 3, "block": 4}[verdict])


if __name__ == "__main__":
    main()

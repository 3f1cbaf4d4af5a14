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
of a conflict. Prints the ledger entry of the receipt. Exit status: 0 pass,
3 escalate, 4 block; 1 when the gateway refuses the intent (its problem
document is printed), 2 when it cannot be reached.
"""

import argparse
import base64
import datetime
import json
import os
import sys
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=os.environ.get("TOLLGATE_URL", "http://127.0.0.1:8080"),
                    help="the gateway (default: $TOLLGATE_URL, else http://127.0.0.1:8080)")
    ap.add_argument("--key", required=True)
    ap.add_argument("--envelope")
    ap.add_argument("intent")
    args = ap.parse_args()
    request = urllib.request.Request(
        args.url + "/v1/intents",
        data=envelope(args),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            entry = answer.read()
    except urllib.error.HTTPError as e:
        # A problem document (RFC 9457): type, title, status, detail.
        print(e.read().decode(), file=sys.stderr)
        sys.exit(1)
    except urllib.error.URLError as e:
        print(f"cannot reach {args.url}: {e.reason}", file=sys.stderr)
        sys.exit(2)
    print(entry.decode())
    verdict = json.loads(entry)["receipt"]["decision"]["verdict"]
    sys.exit({"pass": 0, "escalate": 3, "block": 4}[verdict])


if __name__ == "__main__":
    main()

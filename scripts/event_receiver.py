#!/usr/bin/env python3
"""A voice platform's event endpoint, for trying actiond's events locally.

    python3 scripts/event_receiver.py PORT [SECRET...]

Listens on 127.0.0.1:PORT and prints each event it is posted, answering 204.
Each SECRET (the `whsec_…` an endpoint's creation or rotation showed) must
verify the request as the Standard Webhooks specification says, or it is
answered 400: pass two during a rotation's 24 h to see both signatures hold.
Verification uses the `standardwebhooks` package from PyPI when it is
installed (scripts/verify-events installs it), else the same rule written
here with the standard library: the HMAC-SHA256 of `{id}.{timestamp}.{body}`
keyed with the secret's base64-decoded bytes is one of the `v1,…`
signatures, and the timestamp is within 5 minutes.
"""

import base64
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

try:
    from standardwebhooks.webhooks import Webhook

    VERIFIER = "standardwebhooks"
except ImportError:
    Webhook = None
    VERIFIER = "stdlib"

TOLERANCE_SECONDS = 5 * 60


def verified(secret, headers, body):
    if Webhook is not None:
        try:
            Webhook(secret).verify(body, {name.lower(): value for name, value in headers.items()})
            return True
        except Exception:  # the library's WebhookVerificationError, or a malformed header
            return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    event_id, timestamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    expected = base64.b64encode(hmac.new(key, f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()).decode()
    signatures = [part.split(",", 1)[1] for part in headers.get("webhook-signature", "").split() if part.startswith("v1,")]
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


class Receiver(BaseHTTPRequestHandler):
    secrets = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        failing = [n for n, secret in enumerate(self.secrets) if not verified(secret, self.headers, body)]
        if failing:
            print(f"REFUSED: secret {failing} does not verify the signature", flush=True)
            self.send_response(400)
            self.end_headers()
            return
        event = json.loads(body)
        state = f"verified({VERIFIER}, {len(self.secrets)} secret(s))" if self.secrets else "unverified"
        print(f"{state} {event['type']} id={self.headers['webhook-id']} {json.dumps(event['data'])}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1])
    Receiver.secrets = sys.argv[2:]
    print(f"listening on http://127.0.0.1:{port}/ (verifying with {VERIFIER})", flush=True)
    HTTPServer(("127.0.0.1", port), Receiver).serve_forever()

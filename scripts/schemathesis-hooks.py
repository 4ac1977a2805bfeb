"""Schemathesis hooks for settlementd: sign every request as settlementd expects (RequestSigning in
Sources/SettlementCore), over the exact bytes that are sent.

Terminal endpoints are signed with the terminal key, /v1/admin/... with the admin key, from the environment:
ONECARD_ST_TERMINAL_ID, ONECARD_ST_TERMINAL_SECRET (hex), ONECARD_ST_ADMIN_NAME, ONECARD_ST_ADMIN_SECRET (hex).

Run as a program (`python3 scripts/schemathesis-hooks.py setup URL`) it registers terminal 1 and seeds an account
and card 1 through the admin API, and prints the terminal's secret (hex) on stdout.
"""
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
import urllib.request
from urllib.parse import urlsplit


def sign(key: str, secret: bytes, method: str, path_and_query: str, body: bytes, now: float | None = None) -> dict:
    timestamp = str(int(now if now is not None else time.time()))
    nonce = secrets.token_hex(16)
    canonical = "\n".join(
        ["ONECARD-HMAC-SHA256", method.upper(), path_and_query, timestamp, nonce, hashlib.sha256(body).hexdigest()]
    )
    mac = hmac.new(secret, canonical.encode(), hashlib.sha256).hexdigest()
    return {
        "X-OneCard-Key": key,
        "X-OneCard-Timestamp": timestamp,
        "X-OneCard-Nonce": nonce,
        "X-OneCard-Signature": "v1=" + mac,
    }


def credentials(path: str) -> tuple[str, bytes]:
    if path == "/v1/admin" or path.startswith("/v1/admin/"):
        return "admin:" + os.environ["ONECARD_ST_ADMIN_NAME"], bytes.fromhex(os.environ["ONECARD_ST_ADMIN_SECRET"])
    return "terminal:" + os.environ["ONECARD_ST_TERMINAL_ID"], bytes.fromhex(os.environ["ONECARD_ST_TERMINAL_SECRET"])


def setup(base: str) -> None:
    """Registers terminal 1 and seeds account + card 1; prints the terminal's secret."""

    def call(method: str, path: str, payload) -> dict:
        body = json.dumps(payload).encode() if payload is not None else b""
        key, secret = credentials(path)
        request = urllib.request.Request(base + path, data=body or None, method=method)
        request.add_header("Content-Type", "application/json")
        for name, value in sign(key, secret, method, path, body).items():
            request.add_header(name, value)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    registered = call("POST", "/v1/admin/terminals", {"id": 1, "merchant": "canteen-1", "loads": True})
    account = call("POST", "/v1/admin/accounts", {"name": "Schemathesis", "initialBalance": 1000000})
    call("POST", "/v1/admin/cards", {"serial": 1, "uid": "00000000", "accountID": account["id"]})
    print(registered["secret"])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "setup":
        setup(sys.argv[2])
        sys.exit(0)
    sys.exit("usage: schemathesis-hooks.py setup BASE_URL")

import requests  # noqa: E402  (schemathesis brings it; the setup above needs only the standard library)
import schemathesis  # noqa: E402


SIGNING_HEADERS = ("X-OneCard-Key", "X-OneCard-Timestamp", "X-OneCard-Nonce", "X-OneCard-Signature")


class OneCardSigner(requests.auth.AuthBase):
    """Signs the prepared request: the method, the path and query exactly as sent, and the body's bytes. A signing
    header the generated case left out (a negative test of a missing required header) stays out: re-adding it made
    schemathesis report "schema-violating request accepted" for a request that was in fact whole and signed."""

    def __init__(self, present):
        self.present = present

    def __call__(self, request):
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        path = urlsplit(request.url).path
        key, secret = credentials(path)
        for name, value in sign(key, secret, request.method, request.path_url, body).items():
            if name in self.present:
                request.headers[name] = value
            else:
                request.headers.pop(name, None)
        return request


@schemathesis.auth(refresh_interval=None, retry_on=[])
class OneCardAuth:
    def get(self, case, context):
        return True

    def set(self, case, data, context):
        # The transport hands case._auth to requests, which calls it with the final bytes.
        headers = {name.lower() for name in (case.headers or {})}
        present = {name for name in SIGNING_HEADERS if name.lower() in headers}
        object.__setattr__(case, "_auth", OneCardSigner(present))

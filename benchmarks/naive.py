"""The baseline: what the original token sample did, one fresh `requests.post` per call.

No session and so no pooled connection (every call pays TCP, the TLS handshake and loading the trust
store), no deadline for the whole call, no retry, no validation of the answer, no identity, no audit.
The one departure from the sample is a timeout, so that a broken run cannot hang the benchmark; it
costs nothing when the fake answers.

`python -m benchmarks.naive --port N` serves it over HTTP with the standard library's threading
server: the naive peer whose first token `serve`'s is compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

NAIVE_TIMEOUT = 10.0


def naive_token(endpoint: str, secret: str, user_name: str | None = None) -> dict[str, Any]:
    user: dict[str, Any] = {"id": "dl_" + secrets.token_hex(16)}
    if user_name:
        user["name"] = user_name
    response = requests.post(
        f"{endpoint}/tokens/generate",
        headers={"Authorization": f"Bearer {secret}"},
        json={"user": user},
        timeout=NAIVE_TIMEOUT,
    )
    answer: dict[str, Any] = response.json()
    return answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        answer = naive_token(
            os.environ["DIRECT_LINE_ENDPOINT"], os.environ["DIRECT_LINE_SECRET"], body.get("userName")
        )
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.naive", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The baseline: what the original token sample did, one fresh `requests.post` per call.

No session and so no pooled connection (every call pays TCP, the TLS handshake and loading the trust
store), no deadline for the whole call, no retry, no validation of the answer, no identity, no audit.
The one departure from the sample is a timeout, so that a broken run cannot hang the benchmark; it
costs nothing when the fake answers.
"""

from __future__ import annotations

import secrets
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

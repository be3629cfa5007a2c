"""Bounded reads of HTTP answers: never more than a size cap, never past a deadline.

requests' read timeout applies to each socket read, so an answer that trickles in a byte at a time,
or one that is simply huge, could otherwise hold a request far past its time budget.
"""

from __future__ import annotations

from collections.abc import Callable

import requests

CHUNK = 16 * 1024


class AnswerTooLarge(Exception):
    pass


class DeadlinePassed(Exception):
    pass


def read_bounded(
    response: requests.Response, limit: int, deadline: float, clock: Callable[[], float]
) -> bytes:
    """The body of a `stream=True` response; raises AnswerTooLarge or DeadlinePassed, and lets
    requests/urllib3/OS errors through for the caller to translate."""
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - clock()
        if left <= 0:
            raise DeadlinePassed()
        _limit_next_read(response, left)
        chunk = response.raw.read1(CHUNK, decode_content=True)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge()
        chunks.append(chunk)


def _limit_next_read(response: requests.Response, seconds: float) -> None:
    """Shrink the socket's timeout to what is left, so one stalled read cannot outlast the deadline
    (urllib3 sets it again for the next request on the pooled connection)."""
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(0.01, seconds))

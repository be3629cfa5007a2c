"""The process's trust store for Direct Line: the CA bundle requests would use (REQUESTS_CA_BUNDLE or
CURL_CA_BUNDLE, else certifi's), parsed once into one TLS context (about 20 ms here) rather than
once for every new connection.

A module of its own, importing nothing of requests, so that hosted mode can load it on a thread of
its own while the rest of the server starts (OpenSSL lets go of the interpreter lock for much of it).
"""

from __future__ import annotations

import os
import ssl
import threading

import certifi

_contexts: dict[str, ssl.SSLContext] = {}
_lock = threading.Lock()


def context() -> ssl.SSLContext:
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    with _lock:
        found = _contexts.get(bundle)
        if found is None:
            found = _contexts[bundle] = ssl.create_default_context(cafile=bundle)
        return found

"""The trust store for Direct Line and the identity provider: the CA bundle requests would use
(REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else certifi's), parsed once per process into one TLS context
(about 20 ms here) rather than once for every new connection.

The settings load it (tokens/settings.py), so that a bundle that cannot be read is one problem named
after its setting, found at start-up, rather than a failure of every call.
"""

from __future__ import annotations

import contextlib
import ssl
import threading

import certifi

_contexts: dict[str, ssl.SSLContext] = {}
_lock = threading.Lock()


class Unreadable(Exception):
    """The bundle cannot be used; the message says why without quoting the file."""


def default_bundle() -> str:
    return certifi.where()


def load_soon(bundle: str) -> threading.Thread:
    """Start loading `bundle` on a thread of its own, and return that thread: OpenSSL parses the
    certificates without holding the GIL, so whatever the caller does meanwhile overlaps it (serve's
    start: about 20 ms sooner to its first token); `context` then waits for it. Join the thread
    before forking: a child must not inherit the lock it holds."""

    def load() -> None:
        with contextlib.suppress(Unreadable):  # said by the settings, which load it again
            context(bundle)

    # Not a daemon: the interpreter waits for it at exit. A daemon thread still inside OpenSSL when a
    # quick exit (a port in use, a bad setting) finalizes the interpreter can crash the process.
    loading = threading.Thread(target=load, name="trust-load")
    loading.start()
    return loading


def context(bundle: str) -> ssl.SSLContext:
    """The TLS context verifying against `bundle`, loaded once per process; Unreadable if it cannot."""
    with _lock:
        found = _contexts.get(bundle)
        if found is None:
            try:
                found = _contexts[bundle] = ssl.create_default_context(cafile=bundle)
            except FileNotFoundError:
                raise Unreadable("there is no file at that path") from None
            except IsADirectoryError:
                raise Unreadable("it is a directory, not a file of PEM certificates") from None
            except PermissionError:
                raise Unreadable("this process may not read that file") from None
            except (ssl.SSLError, ValueError, OSError) as error:
                raise Unreadable(f"it holds no usable PEM certificates ({type(error).__name__})") from None
        return found

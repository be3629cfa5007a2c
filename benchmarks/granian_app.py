"""The hosted app for granian, for `python -m benchmarks.servers` only: the same WSGI application,
route table, settings (read once) and confirmed audit log that `serve` runs in each worker process,
built by granian's factory call in each of its workers.

    BENCH_THREADS=16 granian --interface wsgi --factory --workers 2 --blocking-threads 16 \
        benchmarks.granian_app:app
"""

from __future__ import annotations

import os
from wsgiref.types import WSGIApplication

from tokens import logs, routes
from tokens.server import HostedApp
from tokens.settings import load_settings


def app() -> WSGIApplication:
    logs.configure()
    routes.configure(int(os.environ.get("BENCH_THREADS", "16")), load_settings())
    return HostedApp()

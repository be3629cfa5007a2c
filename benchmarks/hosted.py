"""Measurements 2 and 4: `python -m tokens serve` in a process of its own, under load.

2. throughput and latency of `serve` and of the Node peer, side by side: both run at once (an idle
   one costs nothing) and take turns at each concurrency, so that whatever else the machine does
   falls on both alike; the CPU each used, and the fake Direct Line's meanwhile, comes from /proc,
   before and after each level. First the fake itself is loaded alone, straight at
   `tokens/generate` at the highest concurrency, to show what it can carry (benchmarks/validity.py);
4. memory: VmRSS of one `serve` process after each checkpoint of requests, and its audit lines,
   counted once it has stopped (they go through a queue that is written out at exit).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path

from benchmarks.fake_directline import RunningFake
from benchmarks.inprocess import TOKEN_BODY
from benchmarks.load import HEADERS, LoadResult, merged, run_python, run_wrk, wrk_path
from benchmarks.processes import Server, cpu_seconds, node_command, serve_command, started, token_url
from benchmarks.results import Level, MemoryResult, Plan, ThroughputResult
from tests.served import ServedApp, child_environment, free_port

WARMUP_CONCURRENCY = 8
# What the servers send to tokens/generate, give or take the user id.
GENERATE_BODY = json.dumps({"user": {"id": "dl_" + "0" * 32, "name": "Ann"}}).encode()


def measure_throughput(
    settings: Mapping[str, str], plan: Plan, work: Path, fake: RunningFake
) -> ThroughputResult:
    wrk = None if plan.python_load_only else wrk_path()
    fake_alone = measure_fake(settings, plan, fake, wrk)
    env = child_environment(settings)
    serve_port, node_port = free_port(), free_port()
    flags = ("--workers", str(plan.serve_workers), "--threads", str(plan.serve_threads))
    with started(
        env,
        Server(serve_command(serve_port, *flags), serve_port, work / "serve-throughput.log"),
        Server(node_command(node_port), node_port, work / "node.log"),
    ) as (serve, node):
        servers = {"serve": (token_url(serve_port), serve.pid), "node": (token_url(node_port), node.pid)}
        if plan.warmup_seconds:  # pools, caches, threads
            for url, _ in servers.values():
                run_python(url, WARMUP_CONCURRENCY, seconds=plan.warmup_seconds)
        levels: dict[str, list[Level]] = {name: [] for name in servers}
        turn_seconds = plan.load_seconds / plan.load_turns
        for concurrency in plan.concurrency:
            turns: dict[str, list[Level]] = {name: [] for name in servers}
            for _ in range(plan.load_turns):
                for name, (url, pid) in servers.items():
                    turns[name].append(_level(url, (pid, fake.pid), concurrency, turn_seconds, wrk))
            for name in servers:
                levels[name].append(_combined(turns[name]))
    return ThroughputResult(
        plan.serve_workers, plan.serve_threads, tuple(levels["serve"]), tuple(levels["node"]), fake_alone
    )


def _combined(turns: list[Level]) -> Level:
    return Level(
        merged([turn.load for turn in turns]),
        sum(turn.server_cpu_seconds for turn in turns),
        sum(turn.fake_cpu_seconds for turn in turns),
    )


def measure_fake(settings: Mapping[str, str], plan: Plan, fake: RunningFake, wrk: str | None) -> Level:
    """The fake Direct Line alone: the load generator straight at `tokens/generate` over HTTPS, with
    the secret, at the run's highest concurrency. Its own capacity, and its CPU per request."""
    secret = settings["DIRECT_LINE_SECRET"]
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    ca_file = Path(settings["REQUESTS_CA_BUNDLE"])

    def load(seconds: float) -> LoadResult:
        return _load(
            fake.generate_url,
            max(plan.concurrency),
            seconds,
            wrk,
            body=GENERATE_BODY,
            headers=headers,
            ca_file=ca_file,
        )

    if plan.warmup_seconds:  # as the servers get theirs
        load(plan.warmup_seconds)
    before = cpu_seconds(fake.pid)
    measured = load(plan.load_seconds)
    used = cpu_seconds(fake.pid) - before
    return Level(measured, used, used)


def _level(url: str, pids: tuple[int, int], concurrency: int, seconds: float, wrk: str | None) -> Level:
    """One level against one server; `pids` are the server's and the fake's."""
    before = [cpu_seconds(pid) for pid in pids]
    load = _load(url, concurrency, seconds, wrk)
    server_cpu, fake_cpu = (cpu_seconds(pid) - used for pid, used in zip(pids, before, strict=True))
    return Level(load, server_cpu, fake_cpu)


def _load(
    url: str,
    concurrency: int,
    seconds: float,
    wrk: str | None,
    *,
    body: bytes = TOKEN_BODY,
    headers: Mapping[str, str] = HEADERS,
    ca_file: Path | None = None,
) -> LoadResult:
    if wrk is None:
        return run_python(url, concurrency, seconds=seconds, body=body, headers=headers, ca_file=ca_file)
    return run_wrk(url, concurrency, seconds, wrk, body=body, headers=headers)


def measure_memory(settings: Mapping[str, str], plan: Plan, work: Path) -> MemoryResult:
    port = free_port()
    command = serve_command(port, "--workers", "1", "--threads", str(plan.serve_threads))
    checkpoints: list[tuple[int, int]] = []
    answered = errors = 0
    log_path = work / "serve-memory.log"
    with started(child_environment(settings), Server(command, port, log_path)) as (process,):
        app = ServedApp(process, f"http://127.0.0.1:{port}", log_path)
        for target in plan.memory_checkpoints:
            load = run_python(app.token_url, plan.memory_concurrency, total=target - answered)
            answered += load.requests
            errors += load.errors
            time.sleep(plan.settle_seconds)
            checkpoints.append((answered, app.rss_kib()))
    audit_lines = app.audit_lines()  # now that serve has stopped and written out its log queue
    return MemoryResult(plan.memory_concurrency, tuple(checkpoints), errors, audit_lines)

"""RESULTS.md and the latency plot, from one run's `Results`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from benchmarks import flex
from benchmarks.results import (
    SECTION_COLD,
    SECTION_MEMORY,
    SECTION_OVERHEAD,
    SECTION_PROFILE,
    SECTION_TARGETS,
    SECTION_THROUGHPUT,
    Level,
    Results,
)
from benchmarks.stats import Latencies, median, percentile, ratio

PROFILE_LINES = 80
TARGET_CONCURRENCY = 64
MODES = {
    "full": "full run",
    "quick": "quick mode: every measurement cut short, so the numbers are rough",
    "smoke": "smoke mode: a handful of samples of each, so the numbers measure nothing",
}
SERVERS = {"serve": "serve", "node": "Node peer"}


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool


def targets(results: Results) -> list[Target]:
    return [*_hosted_targets(results), *_in_process_targets(results)]


def _hosted_targets(results: Results) -> list[Target]:
    cold, memory = results.cold_start, results.memory
    serve_first, naive_first = cold.median_first_token("serve"), cold.median_first_token("naive")
    serve, node = results.throughput.at(TARGET_CONCURRENCY)
    c = TARGET_CONCURRENCY
    first_n, last_n = memory.checkpoints[0][0], memory.checkpoints[-1][0]
    return [
        Target(
            "first token of `serve` <= 1.1x the naive server's (medians)",
            f"{ratio(serve_first, naive_first):.2f}x ({serve_first:.0f} vs {naive_first:.0f} ms)",
            serve_first <= 1.1 * naive_first,
        ),
        Target(
            f"`serve` throughput at c={c} >= 0.5x the Node peer's",
            f"{ratio(serve.load.rps, node.load.rps):.2f}x "
            f"({serve.load.rps:.0f} vs {node.load.rps:.0f} requests/s)",
            serve.load.rps >= 0.5 * node.load.rps,
        ),
        Target(
            f"`serve` p99 <= 3x its p50 at c={c}",
            f"{ratio(serve.load.p99_ms, serve.load.p50_ms):.2f}x "
            f"({serve.load.p99_ms:.0f} / {serve.load.p50_ms:.0f} ms)",
            serve.load.p99_ms <= 3 * serve.load.p50_ms,
        ),
        Target(
            "importing function_app adds <= 0 ms over azure.functions + requests",
            f"{cold.added_import_ms:+.1f} ms",
            cold.added_import_ms <= 0,
        ),
        Target(
            f"VmRSS after {last_n:,} requests within 10 % of after {first_n:,}",
            f"{memory.growth * 100:+.1f} %",
            abs(memory.growth) <= 0.10,
        ),
    ]


def _in_process_targets(results: Results) -> list[Target]:
    overhead, delay = results.overhead, results.plan.delay_ms
    app_p50, app_p99 = overhead.app.p(50) - delay, overhead.app.p(99) - delay
    speedup = ratio(overhead.naive.p(50), overhead.app.p(50))
    return [
        Target("in process: overhead p50 <= 1 ms over the fake's delay", f"{app_p50:.2f} ms", app_p50 <= 1),
        Target("in process: overhead p99 <= 5 ms over the fake's delay", f"{app_p99:.2f} ms", app_p99 <= 5),
        Target("in process: app >= 1.5x faster than naive at p50", f"{speedup:.2f}x", speedup >= 1.5),
    ]


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _targets(results: Results) -> list[str]:
    lines = [SECTION_TARGETS, "", "| target | measured | result |", "| --- | ---: | --- |"]
    for target in targets(results):
        lines.append(f"| {target.name} | {target.measured} | {'met' if target.met else '**missed**'} |")
    return [*lines, ""]


def _latency_row(latencies: Latencies, delay: float, label: str) -> str:
    cells = [
        label,
        str(latencies.count),
        _ms(latencies.p(50)),
        _ms(latencies.p(90)),
        _ms(latencies.p(99)),
        _ms(latencies.p(50) - delay),
        _ms(latencies.p(99) - delay),
        _ms(latencies.cpu_p50),
        str(latencies.errors),
    ]
    return "| " + " | ".join(cells) + " |"


def _overhead(results: Results) -> list[str]:
    overhead, delay = results.overhead, results.plan.delay_ms
    app, naive, floor, raw = overhead.app, overhead.naive, overhead.floor, overhead.raw
    return [
        SECTION_OVERHEAD,
        "",
        f"One token request at a time, {app.count} timed calls of each kind after "
        f"{results.plan.overhead_warmup} untimed ones, interleaved in blocks of 10. The app is called "
        "as the Functions host calls it: the `directline_token` function from `app.get_functions()`, "
        "with a `func.HttpRequest` and a `func.Context`. Overhead is the latency minus the fake's fixed "
        f"delay of {delay:g} ms, so it includes the fake's own HTTP and TLS work and waking up after "
        "the delay (see the two floors, which have no app code). Client CPU is the calling thread's "
        "CPU time.",
        "",
        "| call | n | p50 ms | p90 ms | p99 ms | overhead p50 ms | overhead p99 ms "
        "| client CPU p50 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        _latency_row(app, delay, "app: `directline_token` function, `func.HttpRequest` in"),
        _latency_row(naive, delay, "naive: `benchmarks/naive.py`, fresh `requests.post`"),
        _latency_row(floor, delay, "floor: pooled `requests.Session` straight to the fake"),
        _latency_row(raw, delay, "raw floor: `http.client`, one kept-alive TLS connection"),
        "",
        f"- naive / app at p50 (total latency): **{ratio(naive.p(50), app.p(50)):.2f}x**",
        f"- naive / app at p50 (overhead only): {ratio(naive.p(50) - delay, app.p(50) - delay):.2f}x",
        f"- the app's own code over the floor at p50: {app.p(50) - floor.p(50):.2f} ms "
        f"(client CPU {app.cpu_p50 - floor.cpu_p50:.2f} ms per call)",
        f"- `requests` over raw `http.client` at p50: {floor.p(50) - raw.p(50):.2f} ms; the raw floor "
        f"itself is {raw.p(50) - delay:.2f} ms over the delay",
        "",
    ]


def _level_row(name: str, level: Level) -> str:
    load = level.load
    cells = [
        str(load.concurrency),
        name,
        f"{load.requests:,}",
        f"{load.rps:.0f}",
        _ms(load.p50_ms),
        _ms(load.p90_ms),
        _ms(load.p99_ms),
        _ms(load.max_ms),
        str(load.errors),
        _ms(level.cpu_ms_per_request),
    ]
    return "| " + " | ".join(cells) + " |"


def _ratio_row(serve: Level, node: Level) -> str:
    cells = [
        str(serve.load.concurrency),
        f"{ratio(serve.load.rps, node.load.rps):.2f}",
        f"{ratio(serve.load.p50_ms, node.load.p50_ms):.2f}",
        f"{ratio(serve.load.p99_ms, node.load.p99_ms):.2f}",
        f"{ratio(serve.cpu_ms_per_request, node.cpu_ms_per_request):.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


# What each comparison is, and the cost by which it is won (lower wins).
_COSTS: dict[str, Callable[[Level], float]] = {
    "more requests per second": lambda level: -level.load.rps,
    "a lower p50": lambda level: level.load.p50_ms,
    "a lower p99": lambda level: level.load.p99_ms,
    "less CPU per request": lambda level: level.cpu_ms_per_request,
}


def _who_wins(results: Results) -> list[str]:
    """Where the Node peer wins and where `serve` does, measure by measure."""
    pairs = [results.throughput.at(level.load.concurrency) for level in results.throughput.serve]
    lines = []
    for what, cost in _COSTS.items():
        node_wins = [str(s.load.concurrency) for s, n in pairs if cost(n) < cost(s)]
        serve_wins = [str(s.load.concurrency) for s, n in pairs if cost(s) < cost(n)]
        lines.append(
            f"- {what}: the Node peer at c = {', '.join(node_wins) or 'none'}; "
            f"`serve` at c = {', '.join(serve_wins) or 'none'}"
        )
    return lines


def _throughput(results: Results) -> list[str]:
    throughput, plan = results.throughput, results.plan
    tool = throughput.serve[0].load.tool
    serve, node = throughput.at(TARGET_CONCURRENCY)
    lines = [
        SECTION_THROUGHPUT,
        "",
        f"`python -m tokens serve --workers {throughput.workers} --threads {throughput.threads}` (one "
        "worker process per CPU, serve's default threads per process) and the Node peer "
        "(`benchmarks/node_peer.js`: Node's built-in `http` server and `fetch` with kept-alive "
        "connections, no validation, identity, rate limits or audit), each in its own process, both "
        f"running for the whole measurement and taking turns at each level. Loaded by {tool} with "
        f"kept-alive connections for {plan.load_seconds:g} s per level, after {plan.warmup_seconds:g} s "
        "of warm-up each. Every error counts: failed connects, reads or writes, timeouts and any "
        "answer but 200. CPU per request is the server's user and system CPU time (its worker "
        "processes included, from `/proc/<pid>/stat`) during the level, divided by the requests "
        "answered; the load generator and the fake share the same two CPUs.",
        "",
        "| concurrency | server | requests | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| CPU ms/request |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level in throughput.serve:
        serve_level, node_level = throughput.at(level.load.concurrency)
        lines += [_level_row("`serve`", serve_level), _level_row("Node peer", node_level)]
    lines += [
        "",
        "`serve` / Node peer at each level (above 1: `serve` more requests/s, or slower, or more CPU):",
        "",
        "| concurrency | requests/s | p50 | p99 | CPU per request |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *(_ratio_row(*throughput.at(level.load.concurrency)) for level in throughput.serve),
        "",
        "Who wins:",
        "",
        *_who_wins(results),
        f"- CPU per request at c={TARGET_CONCURRENCY}: `serve` {_ms(serve.cpu_ms_per_request)} ms, "
        f"the Node peer {_ms(node.cpu_ms_per_request)} ms",
        "",
        "![latency percentiles and throughput against concurrency](latency.png)",
        "",
    ]
    return lines


def _cold(results: Results) -> list[str]:
    cold = results.cold_start
    serve, naive, node = (cold.median_first_token(kind) for kind in ("serve", "naive", "node"))
    lines = [
        SECTION_COLD,
        "",
        f"Process start to first token: {cold.runs} fresh processes of each kind, run in turn, after "
        f"{results.plan.cold_untimed_runs} untimed run(s) of each. The clock starts just before the "
        "process is started; the benchmark tries to connect every 2 ms, then sends one token request "
        "over HTTP and stops the clock when the answer is read. `serve` runs with its default flags; "
        "the naive server is `benchmarks/naive.py` (the standard library's threading HTTP server and "
        "a fresh `requests.post`), the Node peer `benchmarks/node_peer.js`.",
        "",
        "| fresh process | first token median ms | p90 ms | listening median ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind, label in (
        ("serve", "`python -m tokens serve`"),
        ("naive", "`python -m benchmarks.naive`"),
        ("node", "`node benchmarks/node_peer.js`"),
    ):
        first, listening = cold.first_token_ms[kind], cold.listening_ms[kind]
        lines.append(
            f"| {label} | {median(first):.1f} | {percentile(first, 90):.1f} | {median(listening):.1f} |"
        )
    lines += [
        "",
        f"- `serve` / naive: **{ratio(serve, naive):.2f}x**; `serve` / Node peer: {ratio(serve, node):.2f}x "
        f"({cold.errors} first requests failed)",
        "",
        *_imports(results),
    ]
    return lines


def _imports(results: Results) -> list[str]:
    cold = results.cold_start
    lines = [
        f"Import time, timed inside {cold.runs} fresh interpreters of each kind (interpreter start-up "
        "excluded, as it is the same for both), run in turn with the servers above:",
        "",
        "| fresh interpreter | median ms | p90 ms |",
        "| --- | ---: | ---: |",
    ]
    for kind, label in (("app", "`import function_app`"), ("base", "`import azure.functions, requests`")):
        samples = cold.import_ms[kind]
        lines.append(f"| {label} | {median(samples):.1f} | {percentile(samples, 90):.1f} |")
    lines += [
        "",
        f"- importing `function_app` adds **{cold.added_import_ms:+.1f} ms** over `azure.functions` "
        "and `requests`",
        f"- all of the above with bytecode cached; where no .pyc can be kept, compiling the "
        f"{cold.compiled_files} files of `function_app` and `tokens/` that a token request loads costs "
        f"another {cold.compile_ms:.1f} ms",
        "",
        "What importing `function_app` adds, by top-level package (self time of each module, from "
        f"`python -X importtime`, median of {results.plan.import_profile_runs} run(s)):",
        "",
        "| package | ms |",
        "| --- | ---: |",
    ]
    shown = [(package, ms) for package, ms in cold.import_profile if ms >= 0.5][:15]
    lines += [f"| `{package}` | {ms:.1f} |" for package, ms in shown]
    rest = sum(ms for package, ms in cold.import_profile if (package, ms) not in shown)
    return [*lines, f"| everything else | {rest:.1f} |", ""]


def _memory(results: Results) -> list[str]:
    memory, plan = results.memory, results.plan
    first = memory.checkpoints[0][1]
    lines = [
        SECTION_MEMORY,
        "",
        f"VmRSS (from `/proc/<pid>/status`) of a fresh `python -m tokens serve --workers 1 --threads "
        f"{plan.serve_threads}` (one process, so its VmRSS is all of the server) after each number of "
        f"token requests, sent by the Python load generator at concurrency {memory.concurrency}.",
        "",
        "| requests answered | VmRSS MiB | change from the first |",
        "| ---: | ---: | ---: |",
    ]
    for count, rss in memory.checkpoints:
        lines.append(f"| {count:,} | {rss / 1024:.1f} | {ratio(rss - first, first) * 100:+.1f} % |")
    lost = memory.answered - memory.audit_lines
    lines += [
        "",
        f"- errors: {memory.errors}",
        f"- audit lines in the server's log, counted after it stopped (they are written through a queue "
        f"that is flushed at exit): {memory.audit_lines:,} for {memory.answered:,} requests answered "
        f"({'none lost' if lost == 0 else f'**{lost:+,} missing**'})",
        "",
    ]
    return lines


def _profile(results: Results) -> list[str]:
    return [
        SECTION_PROFILE,
        "",
        f"pyinstrument over {results.plan.profile_samples} in-process calls (the wait for the fake's delay "
        "shows as time in `ssl`/`socket` reads).",
        "",
        "<details><summary>call tree</summary>",
        "",
        "```",
        *results.profile_text.strip().splitlines()[:PROFILE_LINES],
        "```",
        "",
        "</details>",
        "",
    ]


def _header(results: Results) -> list[str]:
    plan, machine = results.plan, results.machine
    command = "python -m benchmarks" + ("" if plan.mode == "full" else f" --{plan.mode}")
    return [
        "# Benchmark results",
        "",
        f"Written by `{command}` ({MODES[plan.mode]}) on {machine.started}, in {machine.seconds:.0f} s: "
        f"Python {machine.python}, Node {machine.node}, {machine.cpus} CPUs, load average "
        f"{machine.load_before[0]:.2f} before and {machine.load_after[0]:.2f} after. Everything runs "
        "on this one machine over loopback: the fake Direct Line (`tests/fakes.py`, its own process, "
        "HTTPS with a self-signed RSA 2048 certificate made for the run, "
        f"{plan.delay_ms:g} ms fixed delay, TCP_NODELAY), the servers and the load generator share its "
        "CPUs, so absolute numbers are noisy; compare the ratios within this run.",
        "",
        "Trust comes from `REQUESTS_CA_BUNDLE`: certifi's public roots plus the run's certificate, so a "
        "fresh connection loads a real-sized trust store as it would against Azure (the Node peer "
        "adds the certificate with `NODE_EXTRA_CA_CERTS`). Rate limits are set to 1,000,000/second "
        "so that they never refuse. Every Python process the run starts keeps and uses bytecode "
        "(`PYTHONDONTWRITEBYTECODE` is dropped from their environment), and the cold-start "
        "measurements follow untimed runs that write it, so imports are timed with bytecode cached, "
        "as on a deployed app.",
        "",
    ]


def render(results: Results) -> str:
    return "\n".join(
        [
            *_header(results),
            *_targets(results),
            *_overhead(results),
            *_throughput(results),
            *_cold(results),
            *_memory(results),
            *flex.render(results.flex, results.plan.flex),
            *_profile(results),
        ]
    )


SERVER_COLORS = {"serve": "tab:blue", "node": "tab:orange"}
PERCENTILE_STYLES = {"p50": "o-", "p90": "s--", "p99": "^:"}


def plot(results: Results, path: Path) -> None:
    throughput = results.throughput
    figure, (latency_axes, rps_axes) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, levels in (("serve", throughput.serve), ("node", throughput.node)):
        concurrency = [level.load.concurrency for level in levels]
        for label, style in PERCENTILE_STYLES.items():
            values = [getattr(level.load, f"{label}_ms") for level in levels]
            latency_axes.plot(
                concurrency, values, style, color=SERVER_COLORS[name], label=f"{SERVERS[name]} {label}"
            )
        rps_axes.plot(
            concurrency,
            [level.load.rps for level in levels],
            "o-",
            color=SERVER_COLORS[name],
            label=SERVERS[name],
        )
    latency_axes.axhline(results.plan.delay_ms, color="grey", linestyle="--", label="fake Direct Line delay")
    latency_axes.set_yscale("log")
    latency_axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    latency_axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    latency_axes.yaxis.set_minor_formatter(NullFormatter())
    latency_axes.set_ylabel("latency (ms, log scale)")
    latency_axes.set_title("token request latency")
    rps_axes.set_ylabel("requests per second")
    rps_axes.set_title("throughput")
    for axes in (latency_axes, rps_axes):
        _concurrency_axis(axes, [level.load.concurrency for level in throughput.serve])
    mode = "" if results.plan.mode == "full" else f" ({results.plan.mode} mode)"
    figure.suptitle(
        f"serve --workers {throughput.workers} --threads {throughput.threads} and the Node peer{mode}, "
        f"{results.machine.cpus} CPUs, loopback"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _concurrency_axis(axes: Axes, concurrency: list[int]) -> None:
    axes.set_xscale("log", base=2)
    axes.set_xticks(concurrency, [str(c) for c in concurrency])
    axes.set_xlabel("concurrent connections")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")

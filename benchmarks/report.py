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
    SECTION_VALIDITY,
    Level,
    Plan,
    Results,
)
from benchmarks.stats import Latencies, median, percentile, ratio
from benchmarks.validity import JUDGED_UP_TO, VALID_SHARE, State, ceiling_rps, percent

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
    judged: bool = True  # False: this run cannot say (a fake-bound or smoke run); `measured` says why

    @property
    def result(self) -> str:
        return "not judged" if not self.judged else "met" if self.met else "missed"


def targets(results: Results) -> list[Target]:
    return [*_hosted_targets(results), *_in_process_targets(results)]


def _hosted_targets(results: Results) -> list[Target]:
    cold, memory = results.cold_start, results.memory
    serve_first, naive_first = cold.median_first_token("serve"), cold.median_first_token("naive")
    first_n, last_n = memory.checkpoints[0][0], memory.checkpoints[-1][0]
    return [
        Target(
            "first token of `serve` <= 1.1x the naive server's (medians)",
            f"{ratio(serve_first, naive_first):.2f}x ({serve_first:.0f} vs {naive_first:.0f} ms)",
            serve_first <= 1.1 * naive_first,
        ),
        *_load_targets(results),
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


def _load_targets(results: Results) -> list[Target]:
    """The targets at c=64, judged only in a valid run: in a fake-bound one both servers waited on
    the fake, so neither their ratio nor `serve`'s latency spread is a result, and none is printed."""
    c = TARGET_CONCURRENCY
    serve, node = results.throughput.at(c)
    verdict = results.validity
    names = (f"`serve` throughput at c={c} >= 0.5x the Node peer's", f"`serve` p99 <= 3x its p50 at c={c}")
    if verdict.fake_bound:
        return [Target(name, "not judged: fake-bound run", met=False, judged=False) for name in names]
    rps_ratio, spread = ratio(serve.load.rps, node.load.rps), ratio(serve.load.p99_ms, serve.load.p50_ms)
    unjudged = "" if verdict.valid else f"; {verdict.label}"
    return [
        Target(
            names[0],
            f"{rps_ratio:.2f}x ({serve.load.rps:.0f} vs {node.load.rps:.0f} requests/s){unjudged}",
            rps_ratio >= 0.5,
            judged=verdict.valid,
        ),
        Target(
            names[1],
            f"{spread:.2f}x ({serve.load.p99_ms:.0f} / {serve.load.p50_ms:.0f} ms){unjudged}",
            spread <= 3,
            judged=verdict.valid,
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
        shown = "**missed**" if target.result == "missed" else target.result
        lines.append(f"| {target.name} | {target.measured} | {shown} |")
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


def _turns(plan: Plan) -> str:
    if plan.load_turns == 1:
        return "one turn each"
    return (
        f"{plan.load_turns} turns of {plan.load_seconds / plan.load_turns:g} s each, alternating (the "
        "machine's speed drifts, and the drift then falls on both alike; requests add up over the turns, "
        "and each percentile is the median of the turns' own)"
    )


def _tool(name: str) -> str:
    return "the Python load generator (`benchmarks/load.py`)" if name == "python" else name


def _percent(share: float) -> str:
    return f"{share * 100:.0f} %"


def _level_row(name: str, level: Level, delay_ms: float) -> str:
    load = level.load
    cells = [
        str(load.concurrency),
        name,
        f"{load.requests:,}",
        f"{load.rps:.0f}",
        _percent(level.share(delay_ms)),
        _ms(load.p50_ms),
        _ms(load.p90_ms),
        _ms(load.p99_ms),
        _ms(load.max_ms),
        str(load.errors),
        _ms(level.cpu_ms_per_request),
        f"{level.fake_cpu_ms_per_request:.3f}",
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


def _validity(results: Results) -> list[str]:
    throughput, plan, verdict = results.throughput, results.plan, results.validity
    fake, delay = throughput.fake, plan.delay_ms
    example = ceiling_rps(TARGET_CONCURRENCY, delay)
    lines = [
        SECTION_VALIDITY,
        "",
        f"Every token request waits {delay:g} ms on the fake Direct Line, so c connections carry at most "
        f"c / delay requests per second: the ceiling ({TARGET_CONCURRENCY} / {delay / 1000:g} s = "
        f"{example:,.0f} requests/s). The Node peer, a minimal proxy, is the yardstick: a run in which "
        f"it stays under {_percent(VALID_SHARE)} of the ceiling at any c <= {JUDGED_UP_TO} is "
        "*fake-bound* (the fake, the load generator or other work on the machine set the pace, not "
        "the servers): its numbers are shown as not results, no `serve` / Node peer ratio is "
        "reported, and `python -m benchmarks` exits 1 (`benchmarks/validity.py`).",
        "",
        f"The fake by itself, first: {_tool(fake.load.tool)} straight at its `tokens/generate` over "
        f"HTTPS with the secret, at the run's highest concurrency, for {plan.load_seconds:g} s after "
        f"{plan.warmup_seconds:g} s of warm-up. It is "
        "`benchmarks/fake_directline.py`: one asyncio event loop in a process of its own, kept-alive "
        "TLS, TCP_NODELAY, a listen backlog of 4096. Its CPU is taken from the same CPUs as the "
        "servers', so it must be cheap as well as fast.",
        "",
        "| concurrency | ceiling requests/s | requests/s | share of the ceiling | p50 ms | p99 ms | errors "
        "| fake CPU ms/request | fake CPU, share of one CPU |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        _fake_row(fake, delay),
        "",
        f"The Node peer at each level judged (c <= {JUDGED_UP_TO}):",
        "",
        "| concurrency | ceiling requests/s | Node peer requests/s | share of the ceiling "
        f"| at least {_percent(VALID_SHARE)} |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    short, judged = dict(verdict.shortfalls), verdict.state is not State.NOT_JUDGED
    for level in throughput.node:
        c, share = level.load.concurrency, level.share(delay)
        if c <= JUDGED_UP_TO:
            passed = ("**no**" if c in short else "yes") if judged else "not judged"
            cells = [str(c), f"{ceiling_rps(c, delay):,.0f}", f"{level.load.rps:,.0f}", percent(share)]
            lines.append("| " + " | ".join([*cells, passed]) + " |")
    return [*lines, "", f"**Verdict: {verdict.reason}.**", ""]


def _fake_row(fake: Level, delay_ms: float) -> str:
    load = fake.load
    cells = [
        str(load.concurrency),
        f"{ceiling_rps(load.concurrency, delay_ms):,.0f}",
        f"{load.rps:,.0f}",
        percent(fake.share(delay_ms)),
        _ms(load.p50_ms),
        _ms(load.p99_ms),
        str(load.errors),
        f"{fake.cpu_ms_per_request:.3f}",
        _percent(ratio(fake.server_cpu_seconds, load.seconds)),
    ]
    return "| " + " | ".join(cells) + " |"


def _ratios(results: Results) -> list[str]:
    """`serve` against the Node peer: only where the run can say it (never in a fake-bound run)."""
    throughput = results.throughput
    if results.validity.fake_bound:
        return [
            "No `serve` / Node peer ratios: this run is fake-bound (see the validity section), so the "
            "numbers above measure the fake and the machine as much as the servers.",
            "",
        ]
    serve, node = throughput.at(TARGET_CONCURRENCY)
    return [
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
    ]


def _throughput(results: Results) -> list[str]:
    throughput, plan = results.throughput, results.plan
    tool = throughput.serve[0].load.tool
    not_results = (
        ["**Not results: this run is fake-bound** (see the validity section). The raw numbers:", ""]
        if results.validity.fake_bound
        else []
    )
    lines = [
        SECTION_THROUGHPUT,
        "",
        f"`python -m tokens serve --workers {throughput.workers} --threads {throughput.threads}` (tuned for "
        "throughput as docs/hosted-mode.md says: a worker process per CPU and one more, and a thread for "
        "every caller of the highest concurrency) and the Node peer "
        "(`benchmarks/node_peer.js`: Node's built-in `http` server and `https.request` with a "
        "keep-alive agent, no validation, identity, rate limits or audit), each in its own process, both "
        f"running for the whole measurement and taking turns at each level, {_turns(plan)}. Loaded by "
        f"{_tool(tool)} with kept-alive connections for {plan.load_seconds:g} s per level, after "
        f"{plan.warmup_seconds:g} s of warm-up each. Every error counts: failed connects, reads or writes, "
        "timeouts and any "
        "answer but 200. CPU per request is the server's user and system CPU time (its worker "
        "processes included, from `/proc/<pid>/stat`) during the level, divided by the requests "
        "answered; the load generator and the fake share the same two CPUs, and the fake's CPU per "
        "request during the level is shown too. The share is of the c / delay ceiling.",
        "",
        *not_results,
        "| concurrency | server | requests | requests/s | share of the ceiling | p50 ms | p90 ms | p99 ms "
        "| max ms | errors | CPU ms/request | fake CPU ms/request |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level in throughput.serve:
        serve_level, node_level = throughput.at(level.load.concurrency)
        lines += [
            _level_row("`serve`", serve_level, plan.delay_ms),
            _level_row("Node peer", node_level, plan.delay_ms),
        ]
    return [
        *lines,
        "",
        *_ratios(results),
        "![latency percentiles and throughput against concurrency](latency.png)",
        "",
    ]


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
        "on this one machine over loopback: the fake Direct Line (`benchmarks/fake_directline.py`, its "
        "own process, HTTPS with a self-signed RSA 2048 certificate made for the run, "
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


def _banner(results: Results) -> list[str]:
    """The verdict, at the top: a fake-bound run must not be read as a result."""
    verdict, fake, delay = results.validity, results.throughput.fake, results.plan.delay_ms
    why = verdict.why[0].upper() + verdict.why[1:]
    alone = (
        f"The fake Direct Line alone carried {percent(fake.share(delay))} of the ceiling at "
        f"c={fake.load.concurrency}, for {fake.cpu_ms_per_request:.3f} ms of CPU per request."
    )
    if verdict.state is State.FAKE_BOUND:
        return [
            f"> **FAKE-BOUND RUN: THE THROUGHPUT NUMBERS BELOW ARE NOT RESULTS.** {why}. No `serve` / "
            "Node peer ratio is reported, and `python -m benchmarks` exited 1. Alone, the fake used "
            f"{fake.cpu_ms_per_request:.3f} ms of CPU per request.",
            "",
        ]
    if verdict.state is State.VALID:
        return [f"**Valid run.** {why}. {alone}", ""]
    return [f"Validity {verdict.label}: {verdict.why}. {alone}", ""]


def render(results: Results) -> str:
    return "\n".join(
        [
            *_header(results),
            *_banner(results),
            *_targets(results),
            *_validity(results),
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
    levels_c = [level.load.concurrency for level in throughput.serve]
    ceilings = [ceiling_rps(c, results.plan.delay_ms) for c in levels_c]
    rps_axes.plot(levels_c, ceilings, "--", color="grey", label="ceiling: c / delay")
    rps_axes.plot(
        levels_c,
        [VALID_SHARE * ceiling for ceiling in ceilings],
        ":",
        color="grey",
        label=f"{_percent(VALID_SHARE)} of it: the Node peer's bar",
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
        _concurrency_axis(axes, levels_c)
    mode = "" if results.plan.mode == "full" else f" ({results.plan.mode} mode)"
    bound = "\nFAKE-BOUND RUN: NOT RESULTS" if results.validity.fake_bound else ""
    figure.suptitle(
        f"serve --workers {throughput.workers} --threads {throughput.threads} and the Node peer{mode}, "
        f"{results.machine.cpus} CPUs, loopback{bound}"
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

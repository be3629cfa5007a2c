"""RESULTS.md and the latency plot, from one run's `Results`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from benchmarks.results import (
    SECTION_COLD,
    SECTION_MEMORY,
    SECTION_OVERHEAD,
    SECTION_THROUGHPUT,
    Results,
)
from benchmarks.stats import Latencies, percentile

FINDINGS = Path(__file__).resolve().parent / "findings.md"
PROFILE_LINES = 80


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    met: bool


def targets(results: Results) -> list[Target]:
    overhead, delay = results.overhead, results.plan.delay_ms
    app_p50, app_p99 = overhead.app.p(50) - delay, overhead.app.p(99) - delay
    speedup = overhead.naive.p(50) / overhead.app.p(50)
    added = results.cold_start.added_import_ms
    memory = results.memory
    first_n, last_n = memory.checkpoints[0][0], memory.checkpoints[-1][0]
    return [
        Target("overhead p50 <= 1 ms over the fake's delay", f"{app_p50:.2f} ms", app_p50 <= 1),
        Target("overhead p99 <= 5 ms over the fake's delay", f"{app_p99:.2f} ms", app_p99 <= 5),
        Target("app >= 1.5x faster than naive at p50", f"{speedup:.2f}x", speedup >= 1.5),
        Target("importing function_app adds <= 60 ms", f"{added:.1f} ms", added <= 60),
        Target(
            f"VmRSS after {last_n:,} requests within 10 % of after {first_n:,}",
            f"{memory.growth * 100:+.1f} %",
            abs(memory.growth) <= 0.10,
        ),
    ]


def _ms(value: float) -> str:
    return f"{value:.2f}"


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
        f"One token request at a time, {app.count} timed calls of each kind after 10 untimed ones, "
        "interleaved in blocks of 10. Overhead is the latency minus the fake's fixed delay of "
        f"{delay:g} ms, so it includes the fake's own HTTP and TLS work and waking up after the delay "
        "(see the two floors, which have no app code). Client CPU is the calling thread's CPU time.",
        "",
        "| call | n | p50 ms | p90 ms | p99 ms | overhead p50 ms | overhead p99 ms "
        "| client CPU p50 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        _latency_row(app, delay, "app: `directline_token` function, `func.HttpRequest` in"),
        _latency_row(naive, delay, "naive: `benchmarks/naive.py`, fresh `requests.post`"),
        _latency_row(floor, delay, "floor: pooled `requests.Session` straight to the fake"),
        _latency_row(raw, delay, "raw floor: `http.client`, one kept-alive TLS connection"),
        "",
        f"- naive / app at p50 (total latency): **{naive.p(50) / app.p(50):.2f}x**",
        f"- naive / app at p50 (overhead only): {(naive.p(50) - delay) / (app.p(50) - delay):.2f}x",
        f"- the app's own code over the floor at p50: {app.p(50) - floor.p(50):.2f} ms "
        f"(client CPU {app.cpu_p50 - floor.cpu_p50:.2f} ms per call)",
        f"- `requests` over raw `http.client` at p50: {floor.p(50) - raw.p(50):.2f} ms; the raw floor "
        f"itself is {raw.p(50) - delay:.2f} ms over the delay",
        "",
    ]


def _throughput(results: Results) -> list[str]:
    loads = results.throughput.loads
    tool = loads[0].tool if loads else "none"
    lines = [
        SECTION_THROUGHPUT,
        "",
        f"`python -m tokens serve --threads {results.throughput.threads}` in its own process, loaded "
        f"by {tool} with kept-alive connections for {results.plan.load_seconds:g} s per level, "
        "after a short warm-up. Every error counts: failed connects, reads or writes, timeouts and "
        "any answer but 200.",
        "",
        "| concurrency | requests | requests/s | p50 ms | p90 ms | p99 ms | max ms | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for load in loads:
        lines.append(
            f"| {load.concurrency} | {load.requests:,} | {load.rps:.0f} | {_ms(load.p50_ms)} | "
            f"{_ms(load.p90_ms)} | {_ms(load.p99_ms)} | {_ms(load.max_ms)} | {load.errors} |"
        )
    if loads:
        best = max(loads, key=lambda load: load.rps)
        one = loads[0]
        lines += [
            "",
            f"- peak throughput {best.rps:.0f} requests/s at concurrency {best.concurrency}, "
            f"{best.rps / one.rps:.1f}x that at concurrency {one.concurrency}",
        ]
    lines += ["", "![latency percentiles against concurrency](latency.png)", ""]
    return lines


def _cold(results: Results) -> list[str]:
    cold = results.cold_start
    lines = [
        SECTION_COLD,
        "",
        f"Median of {cold.runs} fresh processes of each kind, run alternately. Import time is timed "
        "inside the child; the process column is the wall time of the whole child, interpreter "
        "start-up included.",
        "",
        "| fresh process | median ms | p90 ms | median process ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    rows = [
        ("`import function_app`", cold.import_ms["app"], "app"),
        ("`import azure.functions, requests`", cold.import_ms["base"], "base"),
        ("`import function_app` + first token through the function", cold.first_ms["app_first"], "app_first"),
        (
            "`import azure.functions, requests` + first naive `requests.post`",
            cold.first_ms["base_first"],
            "base_first",
        ),
    ]
    for label, samples, kind in rows:
        lines.append(
            f"| {label} | {percentile(samples, 50):.1f} | {percentile(samples, 90):.1f} | "
            f"{percentile(cold.process_ms[kind], 50):.1f} |"
        )
    first_added = cold.median_first("app_first") - cold.median_first("base_first")
    lines += [
        "",
        f"- importing `function_app` adds **{cold.added_import_ms:.1f} ms** over `azure.functions` "
        "and `requests`",
        f"- up to the first token the app adds {first_added:.1f} ms over the naive baseline "
        f"({cold.errors} failed first requests)",
        f"- all of the above with bytecode cached; where no .pyc can be kept, compiling "
        f"`function_app.py` and the {cold.compiled_files - 1} modules of `tokens/` it uses costs "
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
    lines += [f"| everything else | {rest:.1f} |", ""]
    return lines


def _memory(results: Results) -> list[str]:
    memory = results.memory
    first = memory.checkpoints[0][1]
    lines = [
        SECTION_MEMORY,
        "",
        f"VmRSS of a fresh `serve` process (from `/proc/<pid>/status`) after each number of token "
        f"requests, sent by the Python load generator at concurrency {memory.concurrency}.",
        "",
        "| requests answered | VmRSS MiB | change from the first |",
        "| ---: | ---: | ---: |",
    ]
    for count, rss in memory.checkpoints:
        lines.append(f"| {count:,} | {rss / 1024:.1f} | {(rss - first) / first * 100:+.1f} % |")
    lines += [
        "",
        f"- errors: {memory.errors}; audit lines written by the server: {memory.audit_lines:,}",
        "",
    ]
    return lines


def _targets(results: Results) -> list[str]:
    lines = [
        "## Targets",
        "",
        "| target | measured | result |",
        "| --- | ---: | --- |",
    ]
    for target in targets(results):
        lines.append(f"| {target.name} | {target.measured} | {'met' if target.met else '**missed**'} |")
    return [*lines, ""]


def render(results: Results, command: str) -> str:
    plan, machine = results.plan, results.machine
    mode = (
        "quick mode: every measurement cut short, numbers only show that it runs"
        if plan.quick
        else ("full run")
    )
    lines = [
        "# Benchmark results",
        "",
        f"Written by `{command}` ({mode}) on {machine.started}, in {machine.seconds:.0f} s: "
        f"Python {machine.python}, {machine.cpus} CPUs, load average "
        f"{machine.load_before[0]:.2f} before and {machine.load_after[0]:.2f} after. Everything "
        "runs on this one machine over loopback: the fake Direct Line (its own process, HTTPS with a "
        f"self-signed RSA 2048 certificate made for the run, {plan.delay_ms:g} ms fixed delay, "
        "TCP_NODELAY), the app and the load generator share its CPUs, so absolute numbers are "
        "noisy; compare the ratios within this run.",
        "",
        "Trust comes from `REQUESTS_CA_BUNDLE`: certifi's public roots plus the run's certificate, "
        "so a fresh connection loads a real-sized trust store as it would against Azure. Rate limits "
        "are set to 1,000,000/second so that they never refuse; the per-second window also keeps "
        "the limiter's moving-window log to one second of requests.",
        "",
        *_targets(results),
        *_overhead(results),
        *_throughput(results),
        *_cold(results),
        *_memory(results),
        "## Profile of the app's token function",
        "",
        f"pyinstrument over {plan.profile_samples} in-process calls (the wait for the fake's delay "
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
    if FINDINGS.is_file():
        lines += [FINDINGS.read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(lines)


def plot(results: Results, path: Path) -> None:
    loads = results.throughput.loads
    concurrency = [load.concurrency for load in loads]
    figure, (latency_axes, rps_axes) = plt.subplots(1, 2, figsize=(11, 4.5))
    for label, values, style in (
        ("p50", [load.p50_ms for load in loads], "o-"),
        ("p90", [load.p90_ms for load in loads], "s-"),
        ("p99", [load.p99_ms for load in loads], "^-"),
    ):
        latency_axes.plot(concurrency, values, style, label=label)
    latency_axes.axhline(results.plan.delay_ms, color="grey", linestyle="--", label="fake Direct Line delay")
    latency_axes.set_xscale("log", base=2)
    latency_axes.set_yscale("log")
    latency_axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    latency_axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    latency_axes.yaxis.set_minor_formatter(NullFormatter())
    latency_axes.set_xticks(concurrency, [str(c) for c in concurrency])
    latency_axes.set_xlabel("concurrent connections")
    latency_axes.set_ylabel("latency (ms, log scale)")
    latency_axes.set_title("token request latency through serve")
    latency_axes.grid(True, alpha=0.3)
    latency_axes.legend()
    rps_axes.plot(concurrency, [load.rps for load in loads], "o-", color="tab:green")
    rps_axes.set_xscale("log", base=2)
    rps_axes.set_xticks(concurrency, [str(c) for c in concurrency])
    rps_axes.set_xlabel("concurrent connections")
    rps_axes.set_ylabel("requests per second")
    rps_axes.set_title("throughput")
    rps_axes.grid(True, alpha=0.3)
    mode = " (quick mode)" if results.plan.quick else ""
    figure.suptitle(
        f"python -m tokens serve --threads {results.throughput.threads}{mode}, "
        f"{results.machine.cpus} CPUs, loopback"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

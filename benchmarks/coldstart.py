"""Measurement 3: cold start, each sample a fresh process.

- first token: from starting a server process to reading its answer to the first token request over
  HTTP, for `python -m tokens serve` (default flags), the naive server (`benchmarks/naive.py`) and
  the Node peer (`benchmarks/node_peer.js`); also when each first accepted a connection;
- imports: the time to `import function_app`, against `import azure.functions, requests` (the least
  any Python function app that calls Direct Line imports), timed inside the child.

Samples of each kind alternate, after untimed runs of each that write the .pyc files (the caller
drops PYTHONDONTWRITEBYTECODE from the children's environment): everything is timed with bytecode
cached, and `compile_ms` says separately what compiling the app's own sources costs where no .pyc
can be kept. `import_profile` runs `python -X importtime` and adds up, by top-level package, the time
spent in modules that `function_app` imports beyond azure.functions and requests.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.processes import Server, ask_for_token, naive_command, node_command, serve_command, started
from benchmarks.stats import median
from tests.served import ROOT, free_port

CHILD_TIMEOUT = 60.0

SERVERS: dict[str, Callable[[int], list[str]]] = {
    "serve": serve_command,
    "naive": naive_command,
    "node": node_command,
}
IMPORTS = {
    "app": "import function_app",
    "base": "import azure.functions, requests",
}
_TIMED_IMPORT = """
import time
started = time.perf_counter()
{statement}
print((time.perf_counter() - started) * 1000)
"""


@dataclass(frozen=True)
class ColdStartResult:
    runs: int
    first_token_ms: dict[str, tuple[float, ...]]  # server kind -> start to first token, per run
    listening_ms: dict[str, tuple[float, ...]]  # server kind -> start to first accepted connection
    import_ms: dict[str, tuple[float, ...]]  # "app" / "base" -> import time, per run
    errors: int  # first token requests that got no token
    import_profile: tuple[tuple[str, float], ...]  # (top-level package, median ms), largest first
    compile_ms: float  # median of `runs` compiles of the app's sources that a token request loads
    compiled_files: int

    def median_first_token(self, kind: str) -> float:
        return median(self.first_token_ms[kind])

    @property
    def added_import_ms(self) -> float:
        return median(self.import_ms["app"]) - median(self.import_ms["base"])


def measure_cold_start(
    env: Mapping[str, str],
    work: Path,
    *,
    runs: int,
    untimed_runs: int,
    profile_runs: int,
    sources: Sequence[Path],
) -> ColdStartResult:
    for _ in range(untimed_runs):  # writes .pyc files, warms the page cache
        for kind in SERVERS:
            first_token(kind, env, work)
        for statement in IMPORTS.values():
            timed_import(statement, env)
    first: dict[str, list[float]] = {kind: [] for kind in SERVERS}
    listening: dict[str, list[float]] = {kind: [] for kind in SERVERS}
    imports: dict[str, list[float]] = {kind: [] for kind in IMPORTS}
    errors = 0
    for _ in range(runs):
        for kind in SERVERS:
            listening_ms, token_ms, ok = first_token(kind, env, work)
            listening[kind].append(listening_ms)
            first[kind].append(token_ms)
            errors += 0 if ok else 1
        for kind, statement in IMPORTS.items():
            imports[kind].append(timed_import(statement, env))
    return ColdStartResult(
        runs=runs,
        first_token_ms=_frozen(first),
        listening_ms=_frozen(listening),
        import_ms=_frozen(imports),
        errors=errors,
        import_profile=import_profile(env, profile_runs),
        compile_ms=median([compile_sources(sources) for _ in range(runs)]),
        compiled_files=len(sources),
    )


def _frozen(samples: dict[str, list[float]]) -> dict[str, tuple[float, ...]]:
    return {kind: tuple(values) for kind, values in samples.items()}


def first_token(kind: str, env: Mapping[str, str], work: Path) -> tuple[float, float, bool]:
    """(ms to the first accepted connection, ms to the first token, whether it was a token) for a
    fresh server process of this kind, timed from just before it is started."""
    port = free_port()
    began = time.perf_counter()
    with started(env, Server(SERVERS[kind](port), port, work / f"cold-{kind}.log")):
        listening = time.perf_counter()
        ok = ask_for_token(port)
        done = time.perf_counter()
    return (listening - began) * 1000, (done - began) * 1000, ok


def timed_import(statement: str, env: Mapping[str, str]) -> float:
    """Milliseconds a fresh interpreter takes to run this import statement."""
    return float(_run_child(_TIMED_IMPORT.format(statement=statement), env).strip().splitlines()[-1])


def _run_child(code: str, env: Mapping[str, str], *flags: str) -> str:
    """Run Python code in a fresh interpreter; its standard output (standard error with `-X`)."""
    done = subprocess.run(
        [sys.executable, *flags, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cold-start child failed:\n{done.stderr}")
    return done.stderr if flags else done.stdout


def compile_sources(paths: Sequence[Path]) -> float:
    """Milliseconds to compile these files to bytecode, as an import without a .pyc must."""
    sources = [(path.read_text(encoding="utf-8"), str(path)) for path in paths]
    started_at = time.perf_counter()
    for source, name in sources:
        compile(source, name, "exec", dont_inherit=True)
    return (time.perf_counter() - started_at) * 1000


def loaded_app_sources() -> tuple[Path, ...]:
    """The files of `function_app` and `tokens` that this process has loaded so far (after a token
    request in process: what a token request needs)."""
    names = sorted(name for name in sys.modules if name == "function_app" or name.startswith("tokens"))
    files = (getattr(sys.modules[name], "__file__", None) for name in names)
    return tuple(Path(file) for file in files if file)


_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)\s*$")
_MARK = "--- function_app ---"
_PROFILED = (
    "import sys, azure.functions, requests\n"
    f"sys.stderr.write({_MARK!r} + '\\n')\n"
    "sys.stderr.flush()\n"
    "import function_app\n"
)


def import_profile(env: Mapping[str, str], runs: int) -> tuple[tuple[str, float], ...]:
    """Self time of the modules that importing function_app adds, summed by top-level package."""
    per_run: list[dict[str, float]] = []
    for _ in range(runs):
        totals: defaultdict[str, float] = defaultdict(float)
        _, _, added = _run_child(_PROFILED, env, "-X", "importtime").partition(_MARK)
        for line in added.splitlines():
            match = _IMPORTTIME.match(line)
            if match is not None:
                self_us, _cumulative, name = match.groups()
                totals[name.split(".")[0]] += int(self_us) / 1000
        per_run.append(totals)
    packages = {package for totals in per_run for package in totals}
    ranked = [(package, median([totals.get(package, 0.0) for totals in per_run])) for package in packages]
    return tuple(sorted(ranked, key=lambda item: -item[1]))

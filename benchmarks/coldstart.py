"""Measurement 3: cold start, each sample a fresh Python process.

- `app`: time to `import function_app`, timed inside the child (interpreter start-up excluded, as it
  is the same for both);
- `base`: time to `import azure.functions, requests`, the least any Python function app imports;
- `app_first` / `base_first`: the same imports plus the first token request (through the app's
  function, or one naive `requests.post`), i.e. what the first caller after a cold start waits for.

Samples of each kind alternate, after one untimed run of each, which also writes the .pyc files
(PYTHONDONTWRITEBYTECODE is dropped for the children): imports are timed with bytecode cached, and
`compile_ms` says separately what compiling the app's own sources costs where no .pyc can be kept.
`import_profile` runs `python -X importtime` and adds up, by top-level package, the time spent in
modules that `function_app` imports beyond azure.functions and requests.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from benchmarks.stats import median

ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT = 60.0

_APP = """
import json, time
started = time.perf_counter()
import function_app
print(json.dumps({"import_ms": (time.perf_counter() - started) * 1000}))
"""
_BASE = """
import json, time
started = time.perf_counter()
import azure.functions, requests
print(json.dumps({"import_ms": (time.perf_counter() - started) * 1000}))
"""
_APP_FIRST = """
import json, time
started = time.perf_counter()
import function_app
imported = time.perf_counter()
import azure.functions as func
handler = {f.get_function_name(): f for f in function_app.registered_functions()}["directline_token"]
request = func.HttpRequest(
    method="POST", url="https://bench.azurewebsites.net/api/directline/token",
    headers={"Content-Type": "application/json", "Origin": "https://www.contoso.com"},
    params={}, route_params={}, body=b'{"userName": "Ann"}')
response = handler.get_user_function()(request)
done = time.perf_counter()
print(json.dumps({"import_ms": (imported - started) * 1000, "first_ms": (done - started) * 1000,
                  "ok": response.status_code == 200}))
"""
_BASE_FIRST = """
import json, os, time
started = time.perf_counter()
import azure.functions, requests
imported = time.perf_counter()
answer = requests.post(os.environ["DIRECT_LINE_ENDPOINT"] + "/tokens/generate",
                       headers={"Authorization": "Bearer " + os.environ["DIRECT_LINE_SECRET"]},
                       json={"user": {"id": "dl_cold", "name": "Ann"}}, timeout=10).json()
done = time.perf_counter()
print(json.dumps({"import_ms": (imported - started) * 1000, "first_ms": (done - started) * 1000,
                  "ok": "token" in answer}))
"""
CHILDREN = {"app": _APP, "base": _BASE, "app_first": _APP_FIRST, "base_first": _BASE_FIRST}


@dataclass(frozen=True)
class ColdStartResult:
    runs: int
    import_ms: dict[str, tuple[float, ...]]  # "app" / "base" -> per-run import times
    first_ms: dict[str, tuple[float, ...]]  # "app_first" / "base_first" -> per-run first-token times
    process_ms: dict[str, tuple[float, ...]]  # every kind -> per-run wall time of the whole process
    errors: int
    import_profile: tuple[tuple[str, float], ...]  # (top-level package, median ms), largest first
    compile_ms: float  # median time to compile function_app.py and the modules of tokens/ it uses
    compiled_files: int

    def median_import(self, kind: str) -> float:
        return median(self.import_ms[kind])

    def median_first(self, kind: str) -> float:
        return median(self.first_ms[kind])

    @property
    def added_import_ms(self) -> float:
        return self.median_import("app") - self.median_import("base")


def _run_child(code: str, env: Mapping[str, str], *flags: str) -> tuple[dict[str, float], float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *flags, "-c", code],
        cwd=ROOT,
        env={key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"},
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"cold-start child failed:\n{done.stderr}")
    lines = done.stdout.strip().splitlines()
    data: dict[str, float] = json.loads(lines[-1]) if lines else {}
    return data, elapsed, done.stderr


def measure_cold_start(env: Mapping[str, str], runs: int, profile_runs: int) -> ColdStartResult:
    for code in CHILDREN.values():
        _run_child(code, env)  # untimed: writes .pyc files, warms the page cache
    import_ms: dict[str, list[float]] = {"app": [], "base": []}
    first_ms: dict[str, list[float]] = {"app_first": [], "base_first": []}
    process_ms: dict[str, list[float]] = {kind: [] for kind in CHILDREN}
    errors = 0
    for _ in range(runs):
        for kind, code in CHILDREN.items():
            data, elapsed, _ = _run_child(code, env)
            process_ms[kind].append(elapsed)
            if kind in import_ms:
                import_ms[kind].append(data["import_ms"])
            else:
                first_ms[kind].append(data["first_ms"])
                errors += 0 if data.get("ok") else 1
    return ColdStartResult(
        runs=runs,
        import_ms={kind: tuple(values) for kind, values in import_ms.items()},
        first_ms={kind: tuple(values) for kind, values in first_ms.items()},
        process_ms={kind: tuple(values) for kind, values in process_ms.items()},
        errors=errors,
        import_profile=import_profile(env, profile_runs),
        compile_ms=median([compile_sources(APP_SOURCES) for _ in range(5)]),
        compiled_files=len(APP_SOURCES),
    )


# What a token request runs: function_app.py and tokens/, less the demo emulator and the CLI.
APP_SOURCES = tuple(
    path
    for path in (ROOT / "function_app.py", *sorted((ROOT / "tokens").glob("*.py")))
    if path.name not in ("emulator.py", "__main__.py")
)


def compile_sources(paths: tuple[Path, ...]) -> float:
    """Milliseconds to compile these files to bytecode, as an import without a .pyc must."""
    sources = [(path.read_text(encoding="utf-8"), str(path)) for path in paths]
    started = time.perf_counter()
    for source, name in sources:
        compile(source, name, "exec", dont_inherit=True)
    return (time.perf_counter() - started) * 1000


_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)\s*$")
_MARK = "--- function_app ---"


def import_profile(env: Mapping[str, str], runs: int) -> tuple[tuple[str, float], ...]:
    """Self time of the modules that importing function_app adds, summed by top-level package."""
    code = (
        "import sys, azure.functions, requests\n"
        f"sys.stderr.write({_MARK!r} + '\\n')\n"
        "sys.stderr.flush()\n"
        "import function_app\n"
    )
    per_run: list[dict[str, float]] = []
    for _ in range(runs):
        _, _, stderr = _run_child(code, env, "-X", "importtime")
        totals: defaultdict[str, float] = defaultdict(float)
        _, _, added = stderr.partition(_MARK)
        for line in added.splitlines():
            match = _IMPORTTIME.match(line)
            if match is not None:
                self_us, _cumulative, name = match.groups()
                totals[name.split(".")[0]] += int(self_us) / 1000
        per_run.append(totals)
    packages = {package for totals in per_run for package in totals}
    ranked = [(package, median([totals.get(package, 0.0) for totals in per_run])) for package in packages]
    return tuple(sorted(ranked, key=lambda item: -item[1]))

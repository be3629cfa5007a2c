"""The benchmarks still run: `python -m benchmarks --smoke` measures everything once, briefly, and
writes RESULTS.md with every section and the latency plot; the smoke plan of the concurrency curve
through Microsoft's worker gives sane numbers. How fast anything is, is not checked here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.flex import FlexLevel, FlexPlan, FlexResult, measure_flex, render
from tests.conftest import ROOT
from tests.functions_host.host import RUNTIME_PYTHON
from tests.prerequisites import missing_prerequisite

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = (
    "## Targets",
    "## 1. Proxy overhead, in process",
    "## 2. Throughput and latency: `serve` and the Node peer",
    "## 3. Cold start",
    "## 4. Memory",
    "## 5. Concurrency per instance through Microsoft's worker",
    "## Profile of the app's token function",
)


def test_smoke_run_writes_every_section_and_the_plot(tmp_path: Path) -> None:
    """The smoke run writes to --output only, with every measurement and a real PNG."""
    if shutil.which("node") is None:
        missing_prerequisite("the benchmarks' Node peer needs node")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--output", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    positions = [results.find(section) for section in SECTIONS]
    assert -1 not in positions, [section for section in SECTIONS if section not in results]
    assert positions == sorted(positions)
    assert "smoke mode" in results
    assert (tmp_path / "latency.png").read_bytes().startswith(PNG_MAGIC)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["RESULTS.md", "latency.png"]


def test_a_ratio_over_a_peer_that_measured_nothing_is_nan_not_a_crash() -> None:
    import math

    from benchmarks.stats import ratio

    assert ratio(870.0, 1501.0) == 870.0 / 1501.0
    assert math.isnan(ratio(870.0, 0.0))
    assert f"{ratio(1.0, 0.0):.2f}x" == "nanx"


# -- concurrency per instance through Microsoft's worker (benchmarks/flex.py) ------------------------


@pytest.fixture(scope="module")
def flex_smoke(tmp_path_factory: pytest.TempPathFactory) -> FlexResult:
    """The smoke plan of measurement 5, run once: a couple of concurrency levels, a few invocations."""
    from benchmarks.run import app_settings

    if not RUNTIME_PYTHON.exists():
        missing_prerequisite(f"{RUNTIME_PYTHON} is missing: `bash .ci/python-venv 3.13 requirements-runtime.txt`")
    return measure_flex(FlexPlan.make("smoke"), tmp_path_factory.mktemp("flex"), app_settings)


def test_flex_smoke_measures_every_level_of_its_plan_without_a_failed_invocation(flex_smoke: FlexResult) -> None:
    plan = FlexPlan.make("smoke")
    measured = [(level.delay_ms, level.threads, level.concurrency) for level in flex_smoke.levels]
    assert measured == [(d, t, n) for d in plan.delays_ms for t in plan.threads for n in plan.concurrency]
    assert all(level.invocations >= level.concurrency for level in flex_smoke.levels), measured
    assert flex_smoke.failures() == []


def test_flex_smoke_latencies_include_the_fakes_delay_and_rates_are_finite(flex_smoke: FlexResult) -> None:
    for level in flex_smoke.levels:
        assert level.delay_ms <= level.p50_ms <= level.p99_ms < 10_000, level
        assert 0 < level.per_second <= level.ideal_per_second, level


def test_flex_smoke_measures_the_workers_cpu_per_invocation(flex_smoke: FlexResult) -> None:
    for level in (*flex_smoke.levels, *flex_smoke.ceiling):
        assert 0 < level.worker_cpu_ms < 1000, level
        assert 0 < level.host_cpu_ms < 1000, level


def test_flex_smoke_measures_the_harness_alone_with_a_no_op_app(flex_smoke: FlexResult) -> None:
    assert [level.app for level in flex_smoke.ceiling] == ["no-op", "no-op"]
    assert all(level.invocations > 0 and level.errors == 0 for level in flex_smoke.ceiling)


def test_flex_section_says_skipped_when_the_runtime_venv_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import benchmarks.flex

    monkeypatch.setattr(benchmarks.flex, "RUNTIME_PYTHON", tmp_path / "no-such-python")
    plan = FlexPlan.make("smoke")
    result = measure_flex(plan, tmp_path, lambda endpoint, secret, certs: {})
    section = "\n".join(render(result, plan))
    assert "skipped: no .venv-py313" in section
    assert result.failures() == []


def test_a_flex_level_that_measured_nothing_renders_nan_instead_of_dividing_by_zero() -> None:
    empty = FlexLevel("token", 20.0, 32, 4, (), 0, 0.0, 0.0, 0.0)
    result = FlexResult(None, 2, 6, "Python 3.13", (empty,), (empty,))
    section = "\n".join(render(result, FlexPlan.make("smoke")))
    assert "| 4 | 0 | nan |" in section

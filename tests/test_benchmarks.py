"""The benchmarks still run: `python -m benchmarks --smoke` measures everything once, briefly, and
writes RESULTS.md with every section and the latency plot. How fast anything is, is not checked
here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.prerequisites import missing_prerequisite

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = (
    "## Targets",
    "## 1. Proxy overhead, in process",
    "## 2. Throughput and latency: `serve` and the Node peer",
    "## 3. Cold start",
    "## 4. Memory",
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

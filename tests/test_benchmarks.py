"""The benchmarks still run: `python -m benchmarks --quick` writes RESULTS.md with all four sections
and the latency plot. How fast anything is, is not checked here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.results import SECTIONS
from tests.conftest import ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_quick_benchmarks_write_results_and_plot(tmp_path: Path) -> None:
    """The quick run writes to --output only, with every measurement and a real PNG."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert section in results, section
    assert "## Targets" in results
    assert "quick mode" in results
    assert (tmp_path / "latency.png").read_bytes().startswith(PNG_MAGIC)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["RESULTS.md", "latency.png"]

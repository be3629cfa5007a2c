"""`python -m tokens check`: every problem by setting name, exit 1 on any, secrets never printed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SECRET = "cli-secret-Zx81-must-not-print"


def _check(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "tokens", "check"], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60, check=False
    )


def test_check_passes_on_valid_settings(tmp_path: Path) -> None:
    result = _check({"DIRECT_LINE_SECRET": SECRET}, tmp_path)
    assert result.returncode == 0
    assert "valid" in result.stdout


def test_check_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    result = _check(
        {"DIRECT_LINE_SECRET": SECRET, "AUTH_MODE": "nope", "UPSTREAM_TIMEOUT": "0", "DIRECT_LINE_ENDPOINT": "https://evil.example"},
        tmp_path,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["AUTH_MODE", "DIRECT_LINE_ENDPOINT", "UPSTREAM_TIMEOUT"]
    assert SECRET not in result.stdout + result.stderr


def test_check_reads_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DIRECT_LINE_SECRET={SECRET}\n")
    assert _check({}, tmp_path).returncode == 0


def test_check_names_a_missing_secret(tmp_path: Path) -> None:
    result = _check({}, tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("DIRECT_LINE_SECRET:")

"""web/token-client.js as a library a site can take: its own unit tests under Node's built-in test
runner (web/test/*.test.mjs), and its TypeScript declarations and the React example of
docs/web-page.md type-checked against the installed packages (web/tsconfig.json)."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.conftest import ROOT
from tests.prerequisites import missing_prerequisite

WEB = ROOT / "web"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        missing_prerequisite("Node.js is not installed")
    return node


def test_token_client_passes_its_own_unit_tests_under_nodes_test_runner() -> None:
    done = subprocess.run(
        [_node(), "--test", "test/"], cwd=WEB, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.M)
    failed = re.search(r"^# fail (\d+)$", done.stdout, re.M)
    assert passed is not None and int(passed[1]) >= 15, done.stdout  # the tests ran, not none
    assert failed is not None and int(failed[1]) == 0


def test_the_type_declarations_and_the_react_example_type_check() -> None:
    compiler = WEB / "node_modules" / "typescript" / "bin" / "tsc"
    if not compiler.is_file():
        missing_prerequisite("TypeScript is not installed in web/node_modules; run `cd web && npm ci`")
    done = subprocess.run(
        [_node(), str(compiler), "-p", "."], cwd=WEB, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_type_check_covers_the_declarations_and_the_example() -> None:
    """A tsconfig that checked nothing would pass: it names each file that matters."""
    config = (WEB / "tsconfig.json").read_text(encoding="utf-8")
    for name in ("token-client.d.ts", "token-client.d.mts", "test/*.ts", "examples/**/*.tsx"):
        assert f'"{name}"' in config
    assert (WEB / "examples" / "react" / "TokenServiceChat.tsx").is_file()

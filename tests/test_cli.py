"""`python -m tokens check`: every problem by setting name with its fix, exit 1 on any, where each
setting came from (`--verbose`), one real token (`--live`); secrets and tokens never printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fakes import SECRET as FAKE_SECRET
from tests.fakes import Behaviour, FakeDirectLine, refused_url
from tokens.settings import SETTINGS

SECRET = "cli-secret-Zx81-must-not-print"
ORIGINS = "http://localhost:3000"


def _check(env: dict[str, str], cwd: Path, *options: str) -> subprocess.CompletedProcess[str]:
    # Only what Python needs (Windows needs SYSTEMROOT for sockets), so that no setting leaks in.
    kept = {name: os.environ[name] for name in ("SYSTEMROOT",) if name in os.environ}
    full_env = {**kept, "PATH": os.defpath, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "tokens", "check", *options],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60, check=False,
    )


def _problem_names(result: subprocess.CompletedProcess[str]) -> list[str]:
    return sorted(line.split(":")[0] for line in result.stderr.strip().splitlines())


def _local_settings(directory: Path, **values: str) -> None:
    document = {"IsEncrypted": False, "Values": {"FUNCTIONS_WORKER_RUNTIME": "python", **values}}
    (directory / "local.settings.json").write_text(json.dumps(document))


@pytest.fixture
def fake() -> Iterator[FakeDirectLine]:
    server = FakeDirectLine()
    yield server
    server.close()


def test_check_passes_on_valid_settings(tmp_path: Path) -> None:
    result = _check({"DIRECT_LINE_SECRET": SECRET, "ALLOWED_ORIGINS": ORIGINS}, tmp_path)
    assert result.returncode == 0
    assert "valid" in result.stdout


def test_check_passes_a_service_that_only_servers_call(tmp_path: Path) -> None:
    result = _check({"DIRECT_LINE_SECRET": SECRET, "ALLOWED_ORIGINS": "none"}, tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


def test_check_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    result = _check(
        {
            "DIRECT_LINE_SECRET": SECRET, "ALLOWED_ORIGINS": ORIGINS, "AUTH_MODE": "nope",
            "UPSTREAM_TIMEOUT": "0", "DIRECT_LINE_ENDPOINT": "https://evil.example",
        },
        tmp_path,
    )
    assert result.returncode == 1
    assert _problem_names(result) == ["AUTH_MODE", "DIRECT_LINE_ENDPOINT", "UPSTREAM_TIMEOUT"]
    assert SECRET not in result.stdout + result.stderr


def test_check_reads_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DIRECT_LINE_SECRET={SECRET}\nALLOWED_ORIGINS={ORIGINS}\n")
    assert _check({}, tmp_path).returncode == 0


def test_check_names_a_missing_secret(tmp_path: Path) -> None:
    result = _check({"ALLOWED_ORIGINS": ORIGINS}, tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("DIRECT_LINE_SECRET:")


def test_a_secret_only_in_local_settings_json_passes_check(tmp_path: Path) -> None:
    _local_settings(tmp_path, DIRECT_LINE_SECRET=SECRET, ALLOWED_ORIGINS=ORIGINS)
    result = _check({}, tmp_path)
    assert result.returncode == 0, result.stderr


def test_local_settings_json_is_found_from_a_subdirectory_of_the_project(tmp_path: Path) -> None:
    _local_settings(tmp_path, DIRECT_LINE_SECRET=SECRET, ALLOWED_ORIGINS=ORIGINS)
    below = tmp_path / "web"
    below.mkdir()
    assert _check({}, below).returncode == 0


@pytest.mark.parametrize(
    ("settings", "named", "fix"),
    [
        ({"ALLOWED_ORIGINS": ""}, "ALLOWED_ORIGINS", "such as https://www.contoso.com"),
        (
            {"DIRECT_LINE_SECRET": "@Microsoft.KeyVault(SecretUri=https://kv-bot.vault.azure.net/secrets/dl/)"},
            "DIRECT_LINE_SECRET", "Key Vault Secrets User",
        ),
        (
            {"DIRECT_LINE_ENDPOINT": "https://directline.botframework.com"},
            "DIRECT_LINE_ENDPOINT", "path must be exactly /v3/directline",
        ),
        (
            {"DIRECT_LINE_ENDPOINT": "https://directline.bot\tframework.com/v3/directline"},
            "DIRECT_LINE_ENDPOINT", "on one line",
        ),
    ],
    ids=["empty origins", "key vault reference", "endpoint without its path", "tab in the host"],
)
def test_each_misconfiguration_that_fails_at_the_first_chat_fails_check_with_the_setting_and_fix(
    tmp_path: Path, settings: dict[str, str], named: str, fix: str
) -> None:
    result = _check({"DIRECT_LINE_SECRET": SECRET, "ALLOWED_ORIGINS": ORIGINS, **settings}, tmp_path)
    assert result.returncode == 1
    assert _problem_names(result) == [named]
    assert fix in result.stderr


def test_verbose_says_where_each_setting_comes_from(tmp_path: Path) -> None:
    _local_settings(tmp_path, DIRECT_LINE_SECRET=SECRET, UPSTREAM_TIMEOUT="4")
    (tmp_path / ".env").write_text("UPSTREAM_TIMEOUT=9\nAUTH_MODE=anonymous\n")
    result = _check({"ALLOWED_ORIGINS": ORIGINS}, tmp_path, "--verbose")
    rows = [line.split(maxsplit=1) for line in result.stdout.splitlines()]
    sources = {row[0]: row[1] for row in rows if row[0] in SETTINGS}
    assert set(sources) == set(SETTINGS)
    assert sources["ALLOWED_ORIGINS"] == "environment"
    assert sources["DIRECT_LINE_SECRET"] == str(tmp_path / "local.settings.json")
    assert sources["UPSTREAM_TIMEOUT"] == str(tmp_path / "local.settings.json")  # it wins over .env
    assert sources["AUTH_MODE"] == str(tmp_path / ".env")
    assert sources["RATE_LIMIT"] == "default"
    assert SECRET not in result.stdout + result.stderr


def test_a_reader_that_stops_early_ends_check_quietly(tmp_path: Path) -> None:
    # As `check --verbose | head -4` does: the pipe closes before check has written everything.
    env = {"PATH": os.defpath, "PYTHONPATH": str(ROOT), "DIRECT_LINE_SECRET": SECRET, "ALLOWED_ORIGINS": ORIGINS}
    child = subprocess.Popen(
        [sys.executable, "-m", "tokens", "check", "--verbose"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=60) == 1
    child.stderr.close()
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr


def test_an_encrypted_local_settings_json_fails_check_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text('{"IsEncrypted": true, "Values": {"DIRECT_LINE_SECRET": "AAEC"}}')
    result = _check({"ALLOWED_ORIGINS": ORIGINS}, tmp_path)
    assert result.returncode == 1
    assert "local.settings.json" in _problem_names(result)
    assert "func settings decrypt" in result.stderr


def test_live_mints_one_token_and_reports_its_lifetime_never_the_token(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    env = {"DIRECT_LINE_SECRET": FAKE_SECRET, "DIRECT_LINE_ENDPOINT": fake.base_url, "ALLOWED_ORIGINS": ORIGINS}
    result = _check(env, tmp_path, "--live")
    assert result.returncode == 0, result.stderr
    assert "ok:" in result.stdout
    assert "valid for 1800 s" in result.stdout
    [generate] = [request for request in fake.requests if request.path.endswith("/tokens/generate")]
    assert generate.body["user"]["id"].startswith("dl_")
    assert FAKE_SECRET not in result.stdout + result.stderr
    assert "token" not in result.stdout.replace("minted a token", "")
    assert "dl-token-" not in result.stdout + result.stderr  # the fake's tokens all begin so


def test_live_reports_a_refused_secret_as_upstream_error(fake: FakeDirectLine, tmp_path: Path) -> None:
    env = {"DIRECT_LINE_SECRET": SECRET, "DIRECT_LINE_ENDPOINT": fake.base_url, "ALLOWED_ORIGINS": ORIGINS}
    result = _check(env, tmp_path, "--live")
    assert result.returncode == 1
    assert result.stderr.startswith("upstream_error:")
    assert "DIRECT_LINE_SECRET" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_live_reports_throttling_as_upstream_unavailable_with_when_to_retry(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    fake.then(Behaviour("status", 429, {"Retry-After": "7"}, b"{}"))
    env = {"DIRECT_LINE_SECRET": FAKE_SECRET, "DIRECT_LINE_ENDPOINT": fake.base_url, "ALLOWED_ORIGINS": ORIGINS}
    result = _check(env, tmp_path, "--live")
    assert result.returncode == 1
    assert result.stderr.startswith("upstream_unavailable:")
    assert "7 s" in result.stderr


def test_live_reports_a_busy_direct_line_without_retry_after_as_upstream_unavailable(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    fake.then_status(503)
    fake.then_status(503)  # and the one retry
    env = {"DIRECT_LINE_SECRET": FAKE_SECRET, "DIRECT_LINE_ENDPOINT": fake.base_url, "ALLOWED_ORIGINS": ORIGINS}
    result = _check(env, tmp_path, "--live")
    assert result.returncode == 1
    assert result.stderr.startswith("upstream_unavailable:")
    assert "busy (HTTP 429 or 503): try again later" in result.stderr


def test_live_reports_a_reset_connection_as_a_failed_connection(fake: FakeDirectLine, tmp_path: Path) -> None:
    fake.then_reset()
    fake.then_reset()
    env = {"DIRECT_LINE_SECRET": FAKE_SECRET, "DIRECT_LINE_ENDPOINT": fake.base_url, "ALLOWED_ORIGINS": ORIGINS}
    result = _check(env, tmp_path, "--live")
    assert result.returncode == 1
    assert "the connection failed" in result.stderr


def test_live_reports_an_unreachable_endpoint_as_upstream_unavailable(tmp_path: Path) -> None:
    env = {"DIRECT_LINE_SECRET": SECRET, "DIRECT_LINE_ENDPOINT": refused_url(), "ALLOWED_ORIGINS": ORIGINS}
    result = _check(env, tmp_path, "--live")
    assert result.returncode == 1
    assert result.stderr.startswith("upstream_unavailable:")
    assert "could not be reached" in result.stderr


def test_live_reports_a_silent_endpoint_as_upstream_timeout(fake: FakeDirectLine, tmp_path: Path) -> None:
    fake.then_hang(5)
    env = {
        "DIRECT_LINE_SECRET": FAKE_SECRET, "DIRECT_LINE_ENDPOINT": fake.base_url, "ALLOWED_ORIGINS": ORIGINS,
        "UPSTREAM_TIMEOUT": "0.5",
    }
    result = _check(env, tmp_path, "--live")
    assert result.returncode == 1
    assert result.stderr.startswith("upstream_timeout:")


def test_an_unreadable_ca_bundle_is_a_problem_of_check_not_a_traceback_of_check_live(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    env = {
        "DIRECT_LINE_SECRET": FAKE_SECRET, "DIRECT_LINE_ENDPOINT": fake.base_url, "ALLOWED_ORIGINS": ORIGINS,
        "REQUESTS_CA_BUNDLE": str(tmp_path / "gone.pem"),
    }
    result = _check(env, tmp_path, "--live")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "REQUESTS_CA_BUNDLE: it cannot be used to verify TLS: there is no file at that path"
    )
    assert fake.requests == []


def test_live_is_not_tried_when_the_settings_are_invalid(fake: FakeDirectLine, tmp_path: Path) -> None:
    env = {"DIRECT_LINE_SECRET": FAKE_SECRET, "DIRECT_LINE_ENDPOINT": fake.base_url}  # no origins
    assert _check(env, tmp_path, "--live").returncode == 1
    assert fake.requests == []


def test_serve_refuses_more_connections_than_its_event_loop_can_watch(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tokens", "serve", "--max-connections", "100001"],
        cwd=tmp_path, env={"PATH": os.defpath, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert "--max-connections: must be at most 100000" in done.stderr


# -- check --live against the variants users meet ------------------------------------------------------

SECONDARY = "cli-second-key-Qp37-must-not-print"


def _live_env(fake: FakeDirectLine, **extra: str) -> dict[str, str]:
    return {"DIRECT_LINE_SECRET": FAKE_SECRET, "DIRECT_LINE_ENDPOINT": fake.base_url, "ALLOWED_ORIGINS": ORIGINS, **extra}


def test_live_reconnects_to_its_conversation_and_says_resuming_works(fake: FakeDirectLine, tmp_path: Path) -> None:
    result = _check(_live_env(fake), tmp_path, "--live")
    assert result.returncode == 0, result.stderr
    assert "ok: resuming works" in result.stdout
    reconnect = fake.requests[-1]
    assert reconnect.path.startswith("/v3/directline/conversations/")
    assert reconnect.headers["Authorization"] == f"Bearer {FAKE_SECRET}"


def test_live_under_enhanced_authentication_says_to_set_the_setting(fake: FakeDirectLine, tmp_path: Path) -> None:
    fake.enhanced_auth = True
    result = _check(_live_env(fake), tmp_path, "--live")
    assert result.returncode == 1
    assert "ok:" in result.stdout  # the token itself was minted
    assert result.stderr.startswith("resume_unavailable:")
    assert "DIRECT_LINE_ENHANCED_AUTH=true" in result.stderr
    assert "Missing user ID" not in result.stdout + result.stderr


def test_live_under_enhanced_authentication_with_the_setting_on_is_content(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    fake.enhanced_auth = True
    result = _check(_live_env(fake, DIRECT_LINE_ENHANCED_AUTH="true"), tmp_path, "--live")
    assert result.returncode == 0, result.stderr
    assert "as DIRECT_LINE_ENHANCED_AUTH=true says" in result.stdout


def test_live_notes_a_site_that_could_resume_although_the_setting_says_it_cannot(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    result = _check(_live_env(fake, DIRECT_LINE_ENHANCED_AUTH="true"), tmp_path, "--live")
    assert result.returncode == 0, result.stderr
    assert "note: resuming works" in result.stdout


def test_live_reports_region_not_allowed_as_a_region_mismatch_with_the_hosts_to_try(
    fake: FakeDirectLine, tmp_path: Path
) -> None:
    fake.region_not_allowed = True
    result = _check(_live_env(fake), tmp_path, "--live")
    assert result.returncode == 1
    assert result.stderr.startswith("upstream_error: region mismatch")
    for host in ("https://directline.botframework.com", "https://europe.directline.botframework.com",
                 "https://india.directline.botframework.com"):
        assert host + "/v3/directline" in result.stderr
    assert "unitedkingdom" not in result.stdout + result.stderr
    assert len(fake.requests) == 1  # nothing to reconnect to


def test_live_mints_with_the_second_key_too(fake: FakeDirectLine, tmp_path: Path) -> None:
    fake.keys = {FAKE_SECRET, SECONDARY}
    result = _check(_live_env(fake, DIRECT_LINE_SECRET_SECONDARY=SECONDARY), tmp_path, "--live")
    assert result.returncode == 0, result.stderr
    assert "with DIRECT_LINE_SECRET_SECONDARY" in result.stdout
    generates = [r.headers["Authorization"] for r in fake.requests if r.path.endswith("/tokens/generate")]
    assert generates == [f"Bearer {FAKE_SECRET}", f"Bearer {SECONDARY}"]
    assert SECONDARY not in result.stdout + result.stderr


def test_live_names_a_refused_second_key(fake: FakeDirectLine, tmp_path: Path) -> None:
    result = _check(_live_env(fake, DIRECT_LINE_SECRET_SECONDARY=SECONDARY), tmp_path, "--live")
    assert result.returncode == 1
    assert result.stderr.startswith("upstream_error: Direct Line refused DIRECT_LINE_SECRET_SECONDARY")
    assert SECONDARY not in result.stdout + result.stderr


def test_a_copilot_studio_token_url_as_endpoint_says_what_to_use_instead(tmp_path: Path) -> None:
    url = (
        "https://contoso.eu.environment.api.powerplatform.com/powervirtualagents/botsbyschema/cr123_agent/"
        "directline/token?api-version=2022-03-01-preview"
    )
    result = _check({"DIRECT_LINE_SECRET": SECRET, "DIRECT_LINE_ENDPOINT": url, "ALLOWED_ORIGINS": ORIGINS}, tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("DIRECT_LINE_ENDPOINT: is a Copilot Studio token endpoint")
    assert "Web channel security" in result.stderr


def test_a_secret_pasted_into_allowed_origins_is_named_by_setting_never_printed(tmp_path: Path) -> None:
    pasted = "cli-pasted-Secret-Qz81xx9abcdef"
    result = _check({"DIRECT_LINE_SECRET": SECRET, "ALLOWED_ORIGINS": f"{ORIGINS},{pasted}"}, tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("ALLOWED_ORIGINS: entry 2 of 2 is not an origin")
    assert pasted not in result.stdout + result.stderr


def test_a_secret_expanded_into_allowed_origins_from_dotenv_is_not_printed(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"BOT_KEY={SECRET}\nALLOWED_ORIGINS=${{BOT_KEY}}\n")
    result = _check({"DIRECT_LINE_SECRET": SECRET}, tmp_path)
    assert result.returncode == 1
    assert "ALLOWED_ORIGINS: entry 1 of 1" in result.stderr
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "content",
    [
        '{"Values": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"Values": {"UPSTREAM_TIMEOUT": ' + "9" * 5000 + "}}",
        '{"Values": {' + ", ".join(f'"S{n}": "{"v" * 200}"' for n in range(60_000)) + "}}",
    ],
    ids=["nested deep", "a 5,000-digit number", "15 MB"],
)
def test_check_ends_a_hostile_local_settings_json_with_a_named_problem_not_a_traceback(
    tmp_path: Path, content: str
) -> None:
    """Once: a traceback for the first two, minutes of work for the third (a quadratic setenv)."""
    (tmp_path / "local.settings.json").write_text(content)
    result = _check({"DIRECT_LINE_SECRET": SECRET, "ALLOWED_ORIGINS": ORIGINS}, tmp_path)  # 60 s at most
    assert result.returncode == 1
    assert result.stderr.startswith("local.settings.json: ")
    assert "Traceback" not in result.stderr


def _python_older_than_3_11() -> str | None:
    """An interpreter older than 3.11 on this machine (pyenv's, or Debian's), if there is one."""
    import glob
    import shutil

    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python")))
    candidates += [found for name in ("python3.10", "python3.9") if (found := shutil.which(name))]
    return candidates[0] if candidates else None


@pytest.mark.parametrize("command", [["serve", "--demo"], ["check"]])
def test_an_older_python_gets_one_line_naming_3_11(tmp_path: Path, command: list[str]) -> None:
    """Ubuntu 22.04's python3 is 3.10: pip installs fine there, and serve once died on an import."""
    python = _python_older_than_3_11()
    if python is None:
        pytest.skip("no Python older than 3.11 on this machine")
    done = subprocess.run(
        [python, "-m", "tokens", *command], cwd=tmp_path, env={"PATH": os.defpath, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "needs Python 3.11 or newer" in done.stderr


def test_live_mints_one_speech_token_when_speech_is_configured(fake: FakeDirectLine, tmp_path: Path) -> None:
    from tests.fakes import SPEECH_KEY, FakeSpeech

    speech = FakeSpeech()
    try:
        env = _live_env(fake, SPEECH_REGION="westeurope", SPEECH_KEY=SPEECH_KEY, SPEECH_ENDPOINT=speech.endpoint)
        result = _check(env, tmp_path, "--live")
        refused = _check({**env, "SPEECH_KEY": "wrongSpeechKey0123456789abcdef"}, tmp_path, "--live")
    finally:
        speech.close()
    assert result.returncode == 0, result.stderr
    assert "ok: speech: a token for westeurope with SPEECH_KEY, valid for" in result.stdout
    assert refused.returncode == 1
    assert "upstream_error: speech:" in refused.stderr
    assert SPEECH_KEY not in result.stdout + result.stderr + refused.stdout + refused.stderr

"""local.settings.json and .env: read as Core Tools and python-dotenv read them, applied under the
real environment (environment > local.settings.json > .env), and a broken file is a problem named
after it, never half a configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokens.localfiles import ENVIRONMENT, lenient_json, read_local_files

SECRET = "local-files-secret-Qw3"


def _write_local_settings(directory: Path, values: object, **document: object) -> Path:
    path = directory / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values, **document}))
    return path


def test_local_settings_values_apply_where_the_environment_sets_nothing(tmp_path: Path) -> None:
    _write_local_settings(tmp_path, {"DIRECT_LINE_SECRET": SECRET, "AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    environ: dict[str, str] = {}
    read_local_files(tmp_path).apply(environ)
    assert environ == {"DIRECT_LINE_SECRET": SECRET, "AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def test_a_real_environment_variable_wins_over_local_settings(tmp_path: Path) -> None:
    _write_local_settings(tmp_path, {"UPSTREAM_TIMEOUT": "4"})
    environ = {"UPSTREAM_TIMEOUT": "2"}
    read_local_files(tmp_path).apply(environ)
    assert environ["UPSTREAM_TIMEOUT"] == "2"


def test_an_empty_environment_variable_still_counts_as_set(tmp_path: Path) -> None:
    _write_local_settings(tmp_path, {"ALLOWED_ORIGINS": "http://localhost:3000"})
    environ = {"ALLOWED_ORIGINS": ""}
    read_local_files(tmp_path).apply(environ)
    assert environ["ALLOWED_ORIGINS"] == ""


def test_local_settings_win_over_dotenv(tmp_path: Path) -> None:
    _write_local_settings(tmp_path, {"UPSTREAM_TIMEOUT": "4"})
    (tmp_path / ".env").write_text("UPSTREAM_TIMEOUT=9\nRATE_LIMIT=5/minute\n")
    environ: dict[str, str] = {}
    read_local_files(tmp_path).apply(environ)
    assert environ == {"UPSTREAM_TIMEOUT": "4", "RATE_LIMIT": "5/minute"}


def test_the_nearest_file_above_the_working_directory_is_read(tmp_path: Path) -> None:
    _write_local_settings(tmp_path, {"AUTH_MODE": "jwt"})
    below = tmp_path / "a" / "b"
    below.mkdir(parents=True)
    assert read_local_files(below).values["AUTH_MODE"] == ("jwt", str(tmp_path / "local.settings.json"))


def test_source_names_the_environment_the_file_or_nothing(tmp_path: Path) -> None:
    path = _write_local_settings(tmp_path, {"AUTH_MODE": "jwt", "RATE_LIMIT": "1/second"})
    local = read_local_files(tmp_path)
    environ = {"RATE_LIMIT": "2/second"}
    assert local.source("RATE_LIMIT", environ) == ENVIRONMENT
    assert local.source("AUTH_MODE", environ) == str(path)
    assert local.source("UPSTREAM_TIMEOUT", environ) is None


def test_numbers_and_booleans_become_text_as_core_tools_writes_them(tmp_path: Path) -> None:
    _write_local_settings(tmp_path, {"UPSTREAM_TIMEOUT": 4, "USER_HANDLE_TTL": 3600.5, "Feature": True})
    values = {name: value for name, (value, _) in read_local_files(tmp_path).values.items()}
    assert values == {"UPSTREAM_TIMEOUT": "4", "USER_HANDLE_TTL": "3600.5", "Feature": "True"}


def test_a_null_value_is_left_unset(tmp_path: Path) -> None:
    _write_local_settings(tmp_path, {"WARMUP_URL": None})
    assert read_local_files(tmp_path).values == {}


def test_invalid_json_is_a_problem_with_its_line_and_no_values(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text('{\n  "Values": {"DIRECT_LINE_SECRET": "x" "A": "1"}\n}')
    local = read_local_files(tmp_path)
    [problem] = local.problems
    assert problem.setting == "local.settings.json"
    assert "line 2" in problem.message
    assert local.values == {}


def test_an_encrypted_file_is_a_problem_that_says_how_to_decrypt(tmp_path: Path) -> None:
    _write_local_settings(tmp_path, {"DIRECT_LINE_SECRET": "CfDJ8..."}, IsEncrypted=True)
    local = read_local_files(tmp_path)
    assert "func settings decrypt" in local.problems[0].message
    assert local.values == {}


@pytest.mark.parametrize("values", [["DIRECT_LINE_SECRET"], "DIRECT_LINE_SECRET=x"])
def test_values_that_are_not_an_object_are_a_problem(tmp_path: Path, values: object) -> None:
    _write_local_settings(tmp_path, values)
    assert read_local_files(tmp_path).problems[0].setting == "local.settings.json"


def test_a_value_that_is_not_text_is_named_in_the_problem(tmp_path: Path) -> None:
    _write_local_settings(tmp_path, {"ALLOWED_ORIGINS": ["https://a.example"], "AUTH_MODE": "jwt"})
    local = read_local_files(tmp_path)
    assert "ALLOWED_ORIGINS" in local.problems[0].message
    assert local.values["AUTH_MODE"][0] == "jwt"


def test_a_byte_order_mark_is_read_as_windows_editors_write_it(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"Values": {"A": "1"}}).encode())
    assert read_local_files(tmp_path).values["A"][0] == "1"


def test_no_files_means_no_values_and_no_problems(tmp_path: Path) -> None:
    local = read_local_files(tmp_path)
    assert (local.values, local.problems) == ({}, [])


def test_a_utf16_dotenv_is_a_problem_that_says_how_to_save_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes("DIRECT_LINE_SECRET=abc\r\n".encode("utf-16"))  # PowerShell 5.1's >
    local = read_local_files(tmp_path)
    [problem] = local.problems
    assert problem.setting == ".env"
    assert "UTF-8" in problem.message


def test_comments_are_allowed_as_core_tools_allows_them(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(
        '{\n  // the bot\'s secret\n  "Values": {\n    /* from the portal */ "DIRECT_LINE_SECRET": "abc"\n  }\n}'
    )
    local = read_local_files(tmp_path)
    assert (local.values["DIRECT_LINE_SECRET"][0], local.problems) == ("abc", [])


def test_comment_marks_inside_a_string_are_text() -> None:
    text = '{"A": "https://a.example/*x*/", "B": "say \\"//\\" twice"} // end'
    assert json.loads(lenient_json(text)) == {"A": "https://a.example/*x*/", "B": 'say "//" twice'}


def test_trailing_commas_are_allowed_as_core_tools_allows_them(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text('{"Values": {"A": "1", "B": "x,}",\n },\n}')
    local = read_local_files(tmp_path)
    assert ({name: value for name, (value, _) in local.values.items()}, local.problems) == ({"A": "1", "B": "x,}"}, [])


def test_an_error_after_a_comment_still_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text('{\n  /* one\n  two */\n  "Values": {"A": "1" "B": "2"}\n}')
    assert "line 4" in read_local_files(tmp_path).problems[0].message


def test_an_unclosed_comment_is_a_problem_where_it_opens(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text('{"Values": {"A": "1"}}\n/* the rest')
    local = read_local_files(tmp_path)
    assert "line 2, column 1" in local.problems[0].message
    assert local.values == {}


@pytest.mark.parametrize("name", ["", "A=B", "A\0B", "A\ud800"])
def test_a_name_no_environment_variable_can_have_is_a_problem_and_left_out(tmp_path: Path, name: str) -> None:
    _write_local_settings(tmp_path, {name: "x", "AUTH_MODE": "jwt"})
    local = read_local_files(tmp_path)
    assert "no environment variable can hold" in local.problems[0].message
    assert list(local.values) == ["AUTH_MODE"]


def test_a_utf16_dotenv_without_byte_order_mark_is_the_same_problem(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes("DIRECT_LINE_SECRET=abc\r\n".encode("utf-16-le"))
    local = read_local_files(tmp_path)
    assert "save it as UTF-8" in local.problems[0].message
    assert local.values == {}


def test_a_utf16_local_settings_json_says_how_to_save_it(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_bytes(json.dumps({"Values": {"A": "1"}}).encode("utf-16"))
    [problem] = read_local_files(tmp_path).problems
    assert (problem.setting, "save it as UTF-8" in problem.message) == ("local.settings.json", True)


def test_a_dotenv_line_that_cannot_be_parsed_is_a_problem_with_its_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('AUTH_MODE=jwt\nALLOWED_ORIGINS="http://localhost:3000\n')
    local = read_local_files(tmp_path)
    [problem] = local.problems
    assert problem.setting == ".env"
    assert "line 2" in problem.message
    assert "close every quote" in problem.message


def test_settings_outside_values_are_a_problem_that_shows_where_they_go(tmp_path: Path) -> None:
    document = {"Values": {"AUTH_MODE": "jwt"}, "DIRECT_LINE_SECRET": SECRET}
    (tmp_path / "local.settings.json").write_text(json.dumps(document))
    local = read_local_files(tmp_path)
    [problem] = local.problems
    assert "'DIRECT_LINE_SECRET' must be inside \"Values\"" in problem.message
    assert SECRET not in problem.message
    assert list(local.values) == ["AUTH_MODE"]  # what is inside still counts


def test_a_crlf_dotenv_reads_as_open_would_read_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b'A="m\r\nn"\r\nB=1\r\n')
    local = read_local_files(tmp_path)
    assert {name: value for name, (value, _) in local.values.items()} == {"A": "m\nn", "B": "1"}


def test_the_function_app_reads_dotenv_only(tmp_path: Path) -> None:
    _write_local_settings(tmp_path, {"DIRECT_LINE_SECRET": SECRET})
    (tmp_path / ".env").write_text("AUTH_MODE=jwt\n")
    local = read_local_files(tmp_path, local_settings_json=False)
    assert {name: value for name, (value, _) in local.values.items()} == {"AUTH_MODE": "jwt"}


def test_a_pasted_name_and_secret_shows_the_name_only(tmp_path: Path) -> None:
    _write_local_settings(tmp_path, {f"DIRECT_LINE_SECRET={SECRET}": ""})
    message = read_local_files(tmp_path).problems[0].message
    assert "'DIRECT_LINE_SECRET'" in message
    assert SECRET[:8] not in message


def test_a_value_not_text_and_a_name_that_cannot_be_set_are_both_named_and_neither_kept(tmp_path: Path) -> None:
    _write_local_settings(tmp_path, {"A": [1], "": "x", "AUTH_MODE": "jwt"})
    local = read_local_files(tmp_path)
    [problem] = local.problems
    assert "not lists or objects: 'A'" in problem.message
    assert "no environment variable can hold" in problem.message
    assert list(local.values) == ["AUTH_MODE"]
    local.apply({})  # and applying what is kept cannot fail


def test_a_lone_surrogate_in_a_value_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text('{"Values": {"A": "x\\ud800", "B": "1"}}')
    local = read_local_files(tmp_path)
    assert "no environment variable can hold" in local.problems[0].message
    assert list(local.values) == ["B"]


# -- hostile files: a named problem, in bounded time -------------------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"Values": ' + "[" * 100_000 + "]" * 100_000 + "}", "nesting too deep"),
        ('{"Values": {"UPSTREAM_TIMEOUT": ' + "9" * 5000 + "}}", "a huge number"),
        ('{"Values": {' + ", ".join(f'"S{n}": "v"' for n in range(5000)) + "}}", "more than 1000 settings"),
        ('{"Values": {"A": "' + "x" * (2 * 1024 * 1024) + '"}}', "is over 1024 KiB"),
    ],
    ids=["nested deep", "a 5,000-digit number", "5,000 values", "2 MiB"],
)
def test_a_hostile_local_settings_json_is_a_problem_named_after_it(tmp_path: Path, content: str, says: str) -> None:
    (tmp_path / "local.settings.json").write_text(content)
    files = read_local_files(tmp_path)
    [problem] = files.problems
    assert problem.setting == "local.settings.json"
    assert says in problem.message
    assert files.values == {}


def test_a_huge_dotenv_is_a_problem_named_after_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("".join(f"S{n}=v\n" for n in range(200_000)))
    [problem] = read_local_files(tmp_path).problems
    assert problem.setting == ".env"

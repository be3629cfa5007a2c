"""Settings are validated together: every problem named by its setting, secrets never printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tokens.localfiles import read_local_files
from tokens.settings import (
    DEFAULT_ENDPOINT,
    SETTINGS,
    Settings,
    SettingsError,
    browser_problems,
    derive_handle_key,
    is_ncrontab,
    load_settings,
)

SECRET = "s3cr3t-Value-That-Must-Not-Leak"


def _problems(**env: str) -> dict[str, str]:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DIRECT_LINE_SECRET": SECRET, **env})
    assert SECRET not in str(caught.value)
    return {problem.setting: problem.message for problem in caught.value.problems}


def test_defaults_with_only_the_secret() -> None:
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET})
    assert settings.direct_line_endpoint == DEFAULT_ENDPOINT
    assert settings.allowed_origins == ()
    assert settings.auth_mode == "anonymous"
    assert settings.trusted_proxy_hops == 1
    assert settings.upstream_timeout == 5.0
    assert settings.user_handle_ttl == 2_592_000
    assert settings.warmup_url is None
    assert settings.warmup_schedule == "0 */5 * * * *"
    assert settings.audit_client_ip == "truncated"
    assert [str(item) for item in settings.rate_limit] == ["10 per 1 minute"]
    assert [str(item) for item in settings.global_rate_limit] == ["600 per 1 minute"]


def test_missing_secret_is_named() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({})
    assert caught.value.setting_names == ["DIRECT_LINE_SECRET"]


def test_secret_never_appears_in_repr() -> None:
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "USER_HANDLE_KEY": "k" * 40})
    assert SECRET not in repr(settings)
    assert "k" * 40 not in repr(settings)


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        DIRECT_LINE_ENDPOINT="https://evil.example/v3/directline",
        ALLOWED_ORIGINS="https://ok.example,not an origin",
        AUTH_MODE="magic",
        RATE_LIMIT="lots",
        GLOBAL_RATE_LIMIT="10/fortnight",
        RATE_LIMIT_STORAGE="mongodb://db",
        TRUSTED_PROXY_HOPS="-1",
        UPSTREAM_TIMEOUT="nan",
        WARMUP_SCHEDULE="*/5 * * * *",
        AUDIT_CLIENT_IP="some",
        USER_HANDLE_TTL="10",
        USER_HANDLE_KEY="short",
        WARMUP_URL="ftp://x",
    )
    assert set(problems) == {
        "DIRECT_LINE_ENDPOINT", "ALLOWED_ORIGINS", "AUTH_MODE", "RATE_LIMIT", "GLOBAL_RATE_LIMIT",
        "RATE_LIMIT_STORAGE", "TRUSTED_PROXY_HOPS", "UPSTREAM_TIMEOUT", "WARMUP_SCHEDULE",
        "AUDIT_CLIENT_IP", "USER_HANDLE_TTL", "USER_HANDLE_KEY", "WARMUP_URL",
    }


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://directline.botframework.com/v3/directline",
        "https://europe.directline.botframework.com/v3/directline",
        "https://india.directline.botframework.com/v3/directline/",
        "https://directline.botframework.azure.cn/v3/directline",
        "http://127.0.0.1:8080/v3/directline",
        "https://localhost:8443/v3/directline",
        "http://[::1]:9000/v3/directline",
    ],
)
def test_direct_line_and_loopback_endpoints_are_accepted(endpoint: str) -> None:
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "DIRECT_LINE_ENDPOINT": endpoint})
    assert settings.direct_line_endpoint == endpoint.rstrip("/")


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://directline.botframework.com/v3/directline",
        "https://directline.botframework.com.evil.example/v3/directline",
        "https://evildirectline.botframework.com/v3/directline",
        "https://a.b.directline.botframework.com/v3/directline",
        "https://user:pw@directline.botframework.com/v3/directline",
        "https://directline.botframework.com:8443/v3/directline",
        "https://directline.botframework.com/v3/directline?x=1",
        "http://10.0.0.5/v3/directline",
        "http://localhost.evil.example/v3/directline",
        "directline.botframework.com",
    ],
)
def test_any_other_endpoint_is_refused_so_the_secret_cannot_leave(endpoint: str) -> None:
    assert "DIRECT_LINE_ENDPOINT" in _problems(DIRECT_LINE_ENDPOINT=endpoint)


def test_origin_problem_names_the_bad_entry_by_position() -> None:
    message = _problems(ALLOWED_ORIGINS="https://ok.example, https://*.*.example")["ALLOWED_ORIGINS"]
    assert message.startswith("entry 2 of 2 is not an origin")


@pytest.mark.parametrize(
    "pasted", ["fake-directline-secret-7Qm2xZ9vRb.Yq3", "https://user:hunter2-secret@www.contoso.com"]
)
def test_a_secret_pasted_into_the_origins_is_never_repeated(pasted: str) -> None:
    message = _problems(ALLOWED_ORIGINS=f"https://ok.example,{pasted}")["ALLOWED_ORIGINS"]
    assert "entry 2 of 2" in message
    assert pasted not in message and "hunter2" not in message and "7Qm2xZ9vRb" not in message


def test_jwt_mode_requires_issuer_and_audience() -> None:
    assert {"AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"} <= set(_problems(AUTH_MODE="jwt"))


def test_jwt_hmac_mode_needs_a_long_secret_never_printed() -> None:
    short = "tooShortJwtSecret"
    problems = _problems(
        AUTH_MODE="jwt", AUTH_JWT_ISSUER="https://id.example", AUTH_JWT_AUDIENCE="api",
        AUTH_JWT_ALGORITHMS="HS256", AUTH_JWT_SECRET=short,
    )
    assert set(problems) == {"AUTH_JWT_SECRET"}
    assert short not in problems["AUTH_JWT_SECRET"]


def test_mixing_hmac_and_public_key_algorithms_is_refused() -> None:
    problems = _problems(
        AUTH_MODE="jwt", AUTH_JWT_ISSUER="https://id.example", AUTH_JWT_AUDIENCE="api",
        AUTH_JWT_ALGORITHMS="RS256,HS256",
    )
    assert "AUTH_JWT_ALGORITHMS" in problems


def test_jwks_url_must_be_https_or_loopback() -> None:
    assert "AUTH_JWKS_URL" in _problems(AUTH_JWKS_URL="http://id.example/keys")
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "AUTH_JWKS_URL": "http://127.0.0.1:5/keys"})
    assert settings.jwks_url == "http://127.0.0.1:5/keys"


def test_handle_key_is_derived_from_the_secret_when_unset() -> None:
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET})
    assert settings.user_handle_key == derive_handle_key(SECRET)
    assert derive_handle_key(SECRET) != derive_handle_key(SECRET + "rotated")
    assert len(settings.user_handle_key) == 32


def test_warmup_url_defaults_to_the_site_health_route() -> None:
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "WEBSITE_HOSTNAME": "tok.azurewebsites.net"})
    assert settings.warmup_url == "https://tok.azurewebsites.net/api/health"


def test_several_rate_limits_joined_with_semicolons() -> None:
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "RATE_LIMIT": "10/minute;100/hour"})
    assert [str(item) for item in settings.rate_limit] == ["10 per 1 minute", "100 per 1 hour"]


@pytest.mark.parametrize(
    ("expression", "valid"),
    [
        ("0 */5 * * * *", True),
        ("0 30 9 * * Mon-Fri", True),
        ("0 0 0 1 Jan *", True),
        ("*/15 * * * * *", True),
        ("0 5,10,15 * * * *", True),
        ("*/5 * * * *", False),
        ("0 */5 * * * * *", False),
        ("60 * * * * *", False),
        ("0 0 24 * * *", False),
        ("0 0 0 0 * *", False),
        ("0 */0 * * * *", False),
        ("0 10-5 * * * *", False),
        ("00:05:00", False),
    ],
)
def test_ncrontab_validation(expression: str, valid: bool) -> None:
    assert is_ncrontab(expression) is valid


def test_dotenv_is_read_but_never_overrides_the_environment(
    no_settings_in_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (no_settings_in_environment / ".env").write_text(f"DIRECT_LINE_SECRET={SECRET}\nUPSTREAM_TIMEOUT=9\n")
    monkeypatch.setenv("UPSTREAM_TIMEOUT", "2")
    settings = load_settings()
    assert settings.direct_line_secret == SECRET
    assert settings.upstream_timeout == 2.0


def test_easyauth_on_app_service_without_its_authentication_is_refused() -> None:
    problems = _problems(AUTH_MODE="easyauth", WEBSITE_SITE_NAME="tokens-app", WEBSITE_AUTH_ENABLED="False")
    assert set(problems) == {"AUTH_MODE"}


def test_easyauth_on_app_service_with_its_authentication_is_accepted() -> None:
    env = {"DIRECT_LINE_SECRET": SECRET, "AUTH_MODE": "easyauth", "WEBSITE_SITE_NAME": "tokens-app", "WEBSITE_AUTH_ENABLED": "True"}
    assert Settings.from_env(env).auth_mode == "easyauth"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("RATE_LIMIT_STORAGE", "redis://localhost:abc"),
        ("DIRECT_LINE_ENDPOINT", "http://127.0.0.1:99999/v3/directline"),
        ("AUTH_JWKS_URL", "https://id.example:port/keys"),
        ("WARMUP_URL", "http://localhost:-1/api/health"),
    ],
)
def test_a_bad_port_is_a_setting_problem_not_a_crash_later(setting: str, value: str) -> None:
    assert setting in _problems(**{setting: value})


def test_a_non_ascii_secret_is_refused() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DIRECT_LINE_SECRET": "sécret-value"})
    assert caught.value.setting_names == ["DIRECT_LINE_SECRET"]
    assert "sécret" not in str(caught.value)


def test_every_default_in_the_table_reads_as_valid() -> None:
    """A default is written once, as an operator would write it, and read like a configured value."""
    from tokens.settings import SETTINGS

    for name, setting in SETTINGS.items():
        if setting.default is not None:
            assert setting.parse(setting.default) is not None, name


def test_conversation_tickets_last_a_day_by_default_and_0_turns_resuming_off() -> None:
    assert Settings.from_env({"DIRECT_LINE_SECRET": SECRET}).conversation_ttl == 86_400
    assert Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "CONVERSATION_TTL": "0"}).conversation_ttl == 0


@pytest.mark.parametrize("value", ["-1", "59", "299", "1209601", "2592000", "1.5", "day"])
def test_a_conversation_ttl_out_of_range_is_refused(value: str) -> None:
    assert set(_problems(CONVERSATION_TTL=value)) == {"CONVERSATION_TTL"}


def test_tickets_may_last_14_days_not_longer_than_direct_line_remembers_an_idle_conversation() -> None:
    """Direct Line forgets an idle conversation after 15-20 days (BotFramework-DirectLineJS #119,
    BotFramework-WebChat #1084)."""
    ttl = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "CONVERSATION_TTL": "1209600"}).conversation_ttl
    assert ttl == 1_209_600
    assert "14 days" in _problems(CONVERSATION_TTL="1209601")["CONVERSATION_TTL"]


@pytest.mark.parametrize(("text", "value"), [("true", True), ("TRUE", True), ("False", False), ("", False)])
def test_enhanced_authentication_is_a_true_or_false_flag_off_by_default(text: str, value: bool) -> None:
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "DIRECT_LINE_ENHANCED_AUTH": text})
    assert settings.direct_line_enhanced_auth is value


@pytest.mark.parametrize("text", ["yes", "1", "on", "enabled"])
def test_enhanced_authentication_is_refused_unless_true_or_false(text: str) -> None:
    assert set(_problems(DIRECT_LINE_ENHANCED_AUTH=text)) == {"DIRECT_LINE_ENHANCED_AUTH"}


def test_the_second_key_is_optional_and_never_in_repr() -> None:
    assert Settings.from_env({"DIRECT_LINE_SECRET": SECRET}).direct_line_secret_secondary is None
    other = "the-sites-Other-key-9Zq"
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "DIRECT_LINE_SECRET_SECONDARY": other})
    assert settings.direct_line_secret_secondary == other
    assert other not in repr(settings)


def test_the_second_key_may_not_be_the_first_again() -> None:
    problems = _problems(DIRECT_LINE_SECRET_SECONDARY=SECRET)
    assert set(problems) == {"DIRECT_LINE_SECRET_SECONDARY"}
    assert "other secret key" in problems["DIRECT_LINE_SECRET_SECONDARY"]


def test_a_placeholder_second_key_is_named() -> None:
    assert set(_problems(DIRECT_LINE_SECRET_SECONDARY="<key 2>")) == {"DIRECT_LINE_SECRET_SECONDARY"}


@pytest.mark.parametrize(
    "url",
    [
        # Copilot Studio's token endpoint as its samples show it (microsoft/CopilotStudioSamples,
        # ui/custom-ui/directline-js/config.sample.js), and the older bot-id form.
        "https://contoso.eu.environment.api.powerplatform.com/powervirtualagents/botsbyschema/cr123_agent/"
        "directline/token?api-version=2022-03-01-preview",
        "https://b1020df7f348423f9bd67f8bb5112e.b3.environment.api.powerplatform.com/powervirtualagents/bots/"
        "24068313-1111-2222-3333-444455556666/directline/token?api-version=2022-03-01-preview",
        "https://contoso.eu.environment.api.powerplatform.com/powervirtualagents/regionalchannelsettings",
    ],
)
def test_a_copilot_studio_token_url_is_named_with_what_to_use_instead(url: str) -> None:
    message = _problems(DIRECT_LINE_ENDPOINT=url)["DIRECT_LINE_ENDPOINT"]
    assert "Copilot Studio token endpoint" in message
    assert "Require secured access" in message and "DIRECT_LINE_SECRET" in message
    assert "https://europe.directline.botframework.com/v3/directline" in message


@pytest.mark.parametrize("schedule", ["0 */5 * * * ²", "0 */² * * * *", "0 ⁵ * * * *", "\u0660 */5 * * * *"])
def test_a_schedule_with_digits_that_are_not_ascii_is_a_problem_not_a_crash(schedule: str) -> None:
    assert not is_ncrontab(schedule)
    assert set(_problems(WARMUP_SCHEDULE=schedule)) == {"WARMUP_SCHEDULE"}


def test_an_ipv4_mapped_loopback_endpoint_means_the_same_on_every_python() -> None:
    """Python 3.13 reads ::ffff:127.0.0.1 as loopback, 3.11 and 3.12 did not."""
    endpoint = "http://[::ffff:127.0.0.1]:7000/v3/directline"
    assert Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "DIRECT_LINE_ENDPOINT": endpoint}).direct_line_endpoint == endpoint


def test_ipv6_callers_are_counted_by_their_64_by_default_and_a_wider_network_on_request() -> None:
    assert Settings.from_env({"DIRECT_LINE_SECRET": SECRET}).rate_limit_ipv6_prefix == 64
    assert Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "RATE_LIMIT_IPV6_PREFIX": "48"}).rate_limit_ipv6_prefix == 48


@pytest.mark.parametrize("value", ["31", "65", "128", "/56", "wide"])
def test_an_ipv6_prefix_out_of_range_is_refused(value: str) -> None:
    assert set(_problems(RATE_LIMIT_IPV6_PREFIX=value)) == {"RATE_LIMIT_IPV6_PREFIX"}


@pytest.mark.parametrize("setting", ["DIRECT_LINE_SECRET", "AUTH_JWT_SECRET", "USER_HANDLE_KEY", "ALLOWED_ORIGINS"])
@pytest.mark.parametrize(
    "reference",
    [
        "@Microsoft.KeyVault(SecretUri=https://kv-bot.vault.azure.net/secrets/dl-secret/)",
        "@Microsoft.KeyVault(VaultName=kv-bot;SecretName=dl-secret)",
        "@microsoft.keyvault(VaultName=kv-bot;SecretName=dl-secret)",
        "@Microsoft.AppConfiguration(Endpoint=https://cfg.azconfig.io; Key=dl-secret)",
    ],
)
def test_an_unresolved_reference_is_a_problem_that_names_the_setting_and_the_fix(setting: str, reference: str) -> None:
    message = _problems(**{setting: reference})[setting]
    assert "unresolved reference" in message
    assert "managed identity" in message


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://directline.botframework.com",
        "https://directline.botframework.com/",
        "https://europe.directline.botframework.com/v3",
        "https://directline.botframework.com/v3/directline/conversations",
        "http://127.0.0.1:8080",
    ],
)
def test_an_endpoint_must_end_in_the_direct_line_path(endpoint: str) -> None:
    assert "/v3/directline" in _problems(DIRECT_LINE_ENDPOINT=endpoint)["DIRECT_LINE_ENDPOINT"]


@pytest.mark.parametrize(
    ("setting", "url"),
    [
        ("DIRECT_LINE_ENDPOINT", "https://directline.bot\tframework.com/v3/directline"),
        ("DIRECT_LINE_ENDPOINT", "https://directline.botframework.com/v3/\ndirectline"),
        ("DIRECT_LINE_ENDPOINT", "http://127.0.0.1\r:8080/v3/directline"),
        ("DIRECT_LINE_ENDPOINT", "https://directline.botframework.com/v3/direct line"),
        ("AUTH_JWKS_URL", "https://login.example/\tkeys"),
        ("WARMUP_URL", "https://app.example\n/api/health"),
        ("RATE_LIMIT_STORAGE", "redis://cache\t.example:6379"),
        ("ALLOWED_ORIGINS", "https://www.con\ttoso.com"),
        ("AUTH_JWT_ISSUER", "https://login.example/\u202etenant"),
    ],
)
def test_control_characters_anywhere_in_a_url_are_a_problem_that_says_to_write_it_on_one_line(
    setting: str, url: str
) -> None:
    assert "on one line" in _problems(**{setting: url})[setting]


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://directline.botframework.com/v3/directline?",
        "https://directline.botframework.com/v3/directline#",
        "https://directline.botframework.com/v3/directline?api-version=3",
    ],
)
def test_an_endpoint_with_a_query_or_fragment_even_empty_is_a_problem(endpoint: str) -> None:
    assert "no query or fragment" in _problems(DIRECT_LINE_ENDPOINT=endpoint)["DIRECT_LINE_ENDPOINT"]


def test_a_url_may_hold_international_characters() -> None:
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "WARMUP_URL": "https://bücher.example/api/health"})
    assert settings.warmup_url == "https://bücher.example/api/health"


def test_a_control_character_problem_never_repeats_the_value() -> None:
    message = _problems(DIRECT_LINE_SECRET="abc\tsecret-value")["DIRECT_LINE_SECRET"]
    assert "secret-value" not in message


def test_the_placeholder_of_the_example_file_is_a_problem_that_says_so() -> None:
    placeholder = "<your bot's Direct Line secret: Azure portal > bot > Channels > Direct Line>"
    assert "placeholder" in _problems(DIRECT_LINE_SECRET=placeholder)["DIRECT_LINE_SECRET"]


def test_empty_allowed_origins_is_valid_but_a_browser_problem_with_the_fix() -> None:
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET})
    [problem] = browser_problems(settings)
    assert problem.setting == "ALLOWED_ORIGINS"
    assert "https://www.contoso.com" in problem.message


def test_allowed_origins_set_is_no_browser_problem() -> None:
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "ALLOWED_ORIGINS": "https://www.contoso.com"})
    assert browser_problems(settings) == []


@pytest.mark.parametrize("written", ["none", "None", " NONE "])
def test_allowed_origins_none_refuses_every_browser_on_purpose_and_is_no_browser_problem(written: str) -> None:
    """A service that only servers call says so (the template's origins prompt takes it), so that
    neither check nor health's warnings ask it for the pages' origins."""
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "ALLOWED_ORIGINS": written})
    assert settings.allowed_origins == ()
    assert settings.servers_only is True
    assert browser_problems(settings) == []


def test_none_is_the_whole_value_or_not_an_origin() -> None:
    message = _problems(ALLOWED_ORIGINS="none,https://www.contoso.com")["ALLOWED_ORIGINS"]
    assert message.startswith("entry 1 of 2 is not an origin")


def test_empty_allowed_origins_is_not_servers_only_and_its_problem_names_none_as_the_way_to_say_so() -> None:
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "ALLOWED_ORIGINS": ""})
    assert settings.servers_only is False
    [problem] = browser_problems(settings)
    assert "or none if only servers call this service" in problem.message


@pytest.fixture
def no_settings_in_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every setting unset in os.environ, in an empty working directory; load_settings writes what
    the files give into os.environ, and monkeypatch takes it all back after the test."""
    for name in SETTINGS:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_load_settings_for_the_command_line_applies_local_settings_json_under_the_environment(
    no_settings_in_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {"DIRECT_LINE_SECRET": SECRET, "UPSTREAM_TIMEOUT": "4"}
    (no_settings_in_environment / "local.settings.json").write_text(json.dumps({"Values": values}))
    monkeypatch.setenv("UPSTREAM_TIMEOUT", "2")
    settings = load_settings(local=read_local_files())
    assert (settings.direct_line_secret, settings.upstream_timeout) == (SECRET, 2.0)


def test_load_settings_reports_a_broken_local_settings_json_with_the_other_problems(
    no_settings_in_environment: Path,
) -> None:
    (no_settings_in_environment / "local.settings.json").write_text("{not json")
    with pytest.raises(SettingsError) as raised:
        load_settings(local=read_local_files())
    assert raised.value.setting_names == ["DIRECT_LINE_SECRET", "local.settings.json"]


def test_the_function_app_leaves_local_settings_json_to_core_tools_and_reads_dotenv(
    no_settings_in_environment: Path,
) -> None:
    # Core Tools applies (and decrypts) local.settings.json before the worker starts; an encrypted
    # file is its business, not a problem of the app's.
    (no_settings_in_environment / "local.settings.json").write_text(
        json.dumps({"IsEncrypted": True, "Values": {"DIRECT_LINE_SECRET": "ZW5jcnlwdGVk"}})
    )
    (no_settings_in_environment / ".env").write_text(f"DIRECT_LINE_SECRET={SECRET}\n")
    assert load_settings().direct_line_secret == SECRET


@pytest.mark.parametrize(("text", "stored"), [("REDIS://cache:6379", "redis://cache:6379"), ("Memory://", "memory://")])
def test_the_storage_url_scheme_is_read_in_any_case_and_kept_in_lower_case(text: str, stored: str) -> None:
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "RATE_LIMIT_STORAGE": text})
    assert settings.rate_limit_storage == stored


def test_serve_runs_a_worker_per_cpu_and_one_more_for_a_redis_url_in_capitals() -> None:
    """The worker count comes from the settings, not from a second, case-sensitive reading."""
    import os

    from tokens.__main__ import default_workers

    shared = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "RATE_LIMIT_STORAGE": "REDIS://cache:6379"})
    assert default_workers(shared) == (os.cpu_count() or 1) + 1
    assert default_workers(Settings.from_env({"DIRECT_LINE_SECRET": SECRET})) == 1


def test_the_ca_bundle_is_requests_own_choice_and_is_loaded_with_the_settings(tmp_path: Path) -> None:
    from tests.certs import make_certificate
    from tokens import trust

    certs = make_certificate(tmp_path)
    bundle = str(certs.ca_bundle)
    assert Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "CURL_CA_BUNDLE": bundle}).ca_bundle == bundle
    both = {"DIRECT_LINE_SECRET": SECRET, "REQUESTS_CA_BUNDLE": bundle, "CURL_CA_BUNDLE": "/elsewhere"}
    assert Settings.from_env(both).ca_bundle == bundle
    assert Settings.from_env({"DIRECT_LINE_SECRET": SECRET}).ca_bundle == trust.default_bundle()


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda tmp: tmp / "missing.pem", "there is no file at that path"),
        (lambda tmp: tmp, "it is a directory"),
        (lambda tmp: (tmp / "junk.pem", (tmp / "junk.pem").write_text("not a certificate"))[0], "no usable PEM certificates"),
    ],
    ids=["missing", "a directory", "not certificates"],
)
def test_an_unusable_ca_bundle_is_one_problem_named_after_its_setting(
    tmp_path: Path, make: Any, why: str
) -> None:
    problems = _problems(REQUESTS_CA_BUNDLE=str(make(tmp_path)))
    assert set(problems) == {"REQUESTS_CA_BUNDLE"}
    assert why in problems["REQUESTS_CA_BUNDLE"]
    assert str(tmp_path) not in problems["REQUESTS_CA_BUNDLE"]


def test_the_user_assigned_identity_is_read_with_the_settings() -> None:
    """AZURE_CLIENT_ID, which the template sets, picks the identity Redis is signed in with."""
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "AZURE_CLIENT_ID": " 1234-abcd "})
    assert settings.azure_client_id == "1234-abcd"
    assert Settings.from_env({"DIRECT_LINE_SECRET": SECRET}).azure_client_id is None


# -- speech ------------------------------------------------------------------------------------------

SPEECH_RESOURCE = (
    "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg-bot/providers/"
    "Microsoft.CognitiveServices/accounts/speech-contoso"
)


def test_speech_is_off_unless_configured() -> None:
    from tokens.settings import speech_mode

    assert speech_mode(Settings.from_env({"DIRECT_LINE_SECRET": SECRET})) is None


def test_speech_with_the_managed_identity_needs_the_region_and_the_resource_id_only() -> None:
    from tokens.settings import speech_mode

    settings = Settings.from_env(
        {"DIRECT_LINE_SECRET": SECRET, "SPEECH_REGION": "WestEurope", "SPEECH_RESOURCE_ID": SPEECH_RESOURCE}
    )
    assert (speech_mode(settings), settings.speech_region) == ("identity", "westeurope")


def test_speech_with_a_key_exchanges_it_at_the_regions_host_by_default() -> None:
    from tokens.settings import speech_mode

    key = "0123456789abcdef0123456789abcdef"
    settings = Settings.from_env({"DIRECT_LINE_SECRET": SECRET, "SPEECH_REGION": "eastus2", "SPEECH_KEY": key})
    assert speech_mode(settings) == "key"
    assert settings.speech_endpoint == "https://eastus2.api.cognitive.microsoft.com"
    assert key not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SPEECH_REGION": "westeurope"}, "SPEECH_RESOURCE_ID"),
        ({"SPEECH_KEY": "0123456789abcdef0123456789abcdef"}, "SPEECH_REGION"),
        ({"SPEECH_REGION": "westeurope", "SPEECH_KEY": "0123456789abcdef0123456789abcdef", "SPEECH_RESOURCE_ID": SPEECH_RESOURCE}, "SPEECH_KEY"),
        ({"SPEECH_REGION": "west europe", "SPEECH_KEY": "0123456789abcdef0123456789abcdef"}, "SPEECH_REGION"),
        ({"SPEECH_REGION": "westeurope", "SPEECH_RESOURCE_ID": "/subscriptions/x/resourceGroups/y"}, "SPEECH_RESOURCE_ID"),
        ({"SPEECH_REGION": "westeurope", "SPEECH_KEY": "<your key>"}, "SPEECH_KEY"),
        (
            {"SPEECH_REGION": "westeurope", "SPEECH_KEY": "0123456789abcdef0123456789abcdef",
             "SPEECH_ENDPOINT": "https://eastus.api.cognitive.microsoft.com"},
            "SPEECH_ENDPOINT",
        ),
    ],
    ids=["region without credential", "key without region", "both credentials", "a region with a space",
         "a resource id of something else", "a placeholder key", "an endpoint in another region"],
)
def test_speech_is_all_or_nothing_with_exactly_one_credential(env: dict[str, str], named: str) -> None:
    assert named in _problems(**env)


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://evil.example",
        "http://westeurope.api.cognitive.microsoft.com",
        "https://westeurope.api.cognitive.microsoft.com.evil.example",
        "https://speech-contoso.cognitiveservices.azure.com/sts/v1.0/issueToken",
        "https://user:pass@speech-contoso.cognitiveservices.azure.com",
    ],
)
def test_the_speech_endpoint_is_azures_own_so_the_key_cannot_be_sent_elsewhere(endpoint: str) -> None:
    env = {"SPEECH_REGION": "westeurope", "SPEECH_KEY": "0123456789abcdef0123456789abcdef", "SPEECH_ENDPOINT": endpoint}
    assert "SPEECH_ENDPOINT" in _problems(**env)


@pytest.mark.parametrize(
    "endpoint",
    ["https://speech-contoso.cognitiveservices.azure.com", "https://westeurope.api.cognitive.microsoft.com/", "http://127.0.0.1:9000"],
)
def test_a_custom_subdomain_the_region_host_or_loopback_is_a_speech_endpoint(endpoint: str) -> None:
    env = {"DIRECT_LINE_SECRET": SECRET, "SPEECH_REGION": "westeurope", "SPEECH_KEY": "0123456789abcdef0123456789abcdef"}
    assert Settings.from_env({**env, "SPEECH_ENDPOINT": endpoint}).speech_endpoint == endpoint.rstrip("/")

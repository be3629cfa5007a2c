"""Settings: every app setting of the SPEC in one table, parsed and validated together.

`Settings.from_env(environ)` returns a frozen `Settings` or raises `SettingsError` carrying every
problem at once, each named by its setting. Each setting's default is written once, in `SETTINGS`, as
the text an operator would write, and goes through the same parser as a configured value. Messages
describe what is wrong with a value without ever repeating a secret's value.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import SplitResult, urlsplit

from tokens.origins import OriginPattern, parse_pattern
from tokens.ratelimit import Limit, parse_limits
from tokens.text import has_control

if TYPE_CHECKING:  # localfiles imports this module
    from tokens.localfiles import LocalFiles

DIRECT_LINE_PATH = "/v3/directline"
DEFAULT_ENDPOINT = "https://directline.botframework.com" + DIRECT_LINE_PATH
DEFAULT_WARMUP_SCHEDULE = "0 */5 * * * *"
AUTH_MODES = ("anonymous", "jwt", "easyauth")
AUDIT_CLIENT_IP_MODES = ("full", "truncated", "none")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)
MIN_KEY_BYTES = 32
# How many requests one process answers at once, unless told (serve --threads). In Azure it is the
# Python worker's thread pool, which infra sets to this (PYTHON_THREADPOOL_THREAD_COUNT; unset it would
# be min(32, CPUs + 4)). Direct Line's connection pool keeps one connection each.
DEFAULT_CONCURRENCY = 32
# ALLOWED_ORIGINS for a service that only servers call: every browser is refused, as when it is empty,
# but on purpose, so neither `check` nor health's warnings ask for the pages' origins.
NO_BROWSER_PAGES = "none"
_HANDLE_KEY_LABEL = b"directline-token-service/user-handle-key/v1"

# Direct Line's global endpoint and those of its regions, as the log and `check` suggest them when
# Direct Line answers RegionNotAllowed.
DIRECT_LINE_ENDPOINTS = (
    DEFAULT_ENDPOINT,
    "https://europe.directline.botframework.com" + DIRECT_LINE_PATH,
    "https://india.directline.botframework.com" + DIRECT_LINE_PATH,
)
# Direct Line's public, regional and sovereign hosts; the secret may be sent to these only.
_DIRECT_LINE_HOSTS = ("directline.botframework.com", "directline.botframework.azure.cn")
_REGIONAL_HOST_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.directline\.botframework\.com")


class Problem(NamedTuple):
    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


class SettingsError(Exception):
    """Every problem of the settings; `values` holds what did read (the defaults where a value did
    not), for what must go on without valid settings, such as the timer's schedule."""

    def __init__(self, problems: list[Problem], values: Mapping[str, Any] | None = None) -> None:
        self.problems = tuple(problems)
        self.values: Mapping[str, Any] = dict(values or {})
        super().__init__("; ".join(str(problem) for problem in problems))

    @property
    def setting_names(self) -> list[str]:
        return sorted({problem.setting for problem in self.problems})


class Setting(NamedTuple):
    """One row of the table: the `Settings` field it fills, its default as an operator would write
    it (None: no default), how to read it (None or ValueError: not valid), and what a valid value
    looks like."""

    field: str
    default: str | None
    parse: Callable[[str], Any]
    expected: str
    required: bool = False


class Settings(NamedTuple):
    direct_line_secret: str
    direct_line_endpoint: str
    allowed_origins: tuple[OriginPattern, ...]
    auth_mode: str
    jwt_issuer: str | None
    jwt_audience: str | None
    jwks_url: str | None
    jwt_algorithms: tuple[str, ...]
    jwt_secret: str | None
    user_claim: str
    name_claim: str
    user_handle_key: bytes
    user_handle_ttl: int
    rate_limit: tuple[Limit, ...]
    global_rate_limit: tuple[Limit, ...]
    rate_limit_storage: str  # a redis:// URL may carry a password
    trusted_proxy_hops: int
    upstream_timeout: float
    warmup_url: str | None
    warmup_schedule: str
    audit_client_ip: str
    conversation_ttl: int
    rate_limit_ipv6_prefix: int
    direct_line_enhanced_auth: bool
    direct_line_secret_secondary: str | None
    speech_region: str | None
    speech_resource_id: str | None
    speech_key: str | None
    speech_endpoint: str | None
    servers_only: bool  # ALLOWED_ORIGINS is `none`: no browser page on purpose
    # Read from the platform's and requests' own variables, not from the SPEC's table:
    on_app_service: bool  # WEBSITE_SITE_NAME is set: the app runs in App Service or Functions
    azure_client_id: str | None  # AZURE_CLIENT_ID: the user-assigned managed identity to sign in with
    ca_bundle: str  # the CA bundle (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE or certifi's), loaded and valid

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        values: dict[str, Any] = {}
        problems: list[Problem] = []
        for name, setting in SETTINGS.items():
            raw = environ.get(name, "").strip()
            value = None
            if raw:
                value, problem = _read(setting, raw)
                if problem is not None:
                    problems.append(Problem(name, problem))
                    value = None
            elif setting.required:
                problems.append(Problem(name, setting.expected))
            if value is None and setting.default is not None:
                value = setting.parse(setting.default)  # every default is valid (a test says so)
            values[setting.field] = value
        _fill_derived(values, environ)
        problems += _check_together(values, environ)
        problems += _check_ca_bundle(values, environ)
        if problems:
            raise SettingsError(problems, values)
        return cls(**values)

    @property
    def jwt_shared_secret(self) -> bool:
        """`jwt` tokens are signed with AUTH_JWT_SECRET (HS*) rather than keys from a JWKS."""
        return signs_with_shared_secret(self.jwt_algorithms)

    def __repr__(self) -> str:
        fields = zip(self._fields, self, strict=True)
        shown = ", ".join(f"{name}={value!r}" for name, value in fields if name not in _HIDDEN)
        return f"Settings({shown})"


class InvalidValue(ValueError):
    """A reader's own explanation of what is wrong, safe to show (it never quotes a secret)."""


def _read(setting: Setting, raw: str) -> tuple[Any, str | None]:
    """The value, or None and what is wrong with the text. Other ValueErrors (int("x"), a bad port)
    quote the value, so only a reader's own InvalidValue message is shown."""
    if raw.lower().startswith(_REFERENCES):
        return None, _UNRESOLVED_REFERENCE
    if has_control(raw):
        return None, _CONTROL_CHARACTERS
    try:
        value = setting.parse(raw)
    except InvalidValue as error:
        return None, str(error)
    except ValueError:
        return None, setting.expected
    return value, None if value is not None else setting.expected


def load_settings(environ: Mapping[str, str] | None = None, *, local: LocalFiles | None = None) -> Settings:
    """Validate `environ`; by default the process's environment, after applying the values of the
    local files that it does not set already (see tokens/localfiles.py): `local` as the command line
    read them (local.settings.json and .env), else .env alone, read now, as inside the Functions
    host, where Core Tools has applied local.settings.json."""
    if environ is not None:
        return Settings.from_env(environ)
    if local is None:
        from tokens.localfiles import read_local_files

        local = read_local_files(local_settings_json=False)
    local.apply(os.environ)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as error:
        raise SettingsError([*local.problems, *error.problems], error.values) from None
    if local.problems:
        raise SettingsError(local.problems, settings._asdict())
    return settings


def browser_problems(settings: Settings) -> list[Problem]:
    """Valid settings with which no browser page can get a token: `check` reports them as errors,
    `serve` and the function app as warnings. A service called only by servers says so with
    ALLOWED_ORIGINS=none, and has none of them."""
    if settings.allowed_origins or settings.servers_only:
        return []
    return [
        Problem(
            "ALLOWED_ORIGINS",
            "is empty, so every browser page is refused (origin_not_allowed): set it to the origins of "
            "the pages that embed Web Chat, comma-separated, such as "
            f"https://www.contoso.com,http://localhost:3000 (or {NO_BROWSER_PAGES} if only servers call "
            "this service)",
        )
    ]


def startup_warnings(settings: Settings, *, peer_known: bool) -> list[str]:
    """Valid settings that still deserve a line when the process starts. `peer_known`: the host
    gives the app the connection's address (hosted mode does; Azure Functions does not)."""
    warnings = [f"Setting {problem}" for problem in browser_problems(settings)]
    if settings.auth_mode == "easyauth" and not settings.on_app_service:
        warnings.append(
            "AUTH_MODE is easyauth outside App Service: X-MS-CLIENT-PRINCIPAL-* headers are believed as "
            "sent; only do this behind a proxy that sets them itself"
        )
    if settings.trusted_proxy_hops == 0 and not peer_known:
        warnings.append(
            "TRUSTED_PROXY_HOPS is 0: X-Forwarded-For is ignored and this host gives no peer address, "
            "so every anonymous caller shares one allowance"
        )
    return warnings


def log_loaded(loaded: Settings | SettingsError, *, peer_known: bool) -> None:
    """Say once, when a process has read its settings, what is wrong with them or surprising."""
    import logging

    log = logging.getLogger("tokens.settings")
    if isinstance(loaded, SettingsError):
        for problem in loaded.problems:
            log.error("Invalid setting %s", problem)
        return
    for warning in startup_warnings(loaded, peer_known=peer_known):
        log.warning("%s", warning)


def derive_handle_key(secret: str) -> bytes:
    """A handle key tied to the secret, so that rotating the secret also retires old handles."""
    return hmac.new(secret.encode(), _HANDLE_KEY_LABEL, hashlib.sha256).digest()


def is_loopback_host(host: str) -> bool:
    """localhost, or a loopback address: an IPv4-mapped IPv6 one (`::ffff:127.0.0.1`) by the IPv4
    address it maps, as Python 3.13 reads it and 3.11 and 3.12 do not, so that one setting means the
    same on every supported Python."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_loopback


def is_copilot_studio_token_url(host: str, path: str) -> bool:
    """A Copilot Studio agent's token endpoint (Power Platform API), which hands out tokens itself:
    it is not Direct Line's API, and the secret must not be sent there."""
    power_platform = host == "api.powerplatform.com" or host.endswith(".api.powerplatform.com")
    return power_platform or "/powervirtualagents/" in path.lower()


def is_direct_line_host(host: str) -> bool:
    return host in _DIRECT_LINE_HOSTS or _REGIONAL_HOST_RE.fullmatch(host) is not None


# -- readers: text -> value, or None / ValueError when the text is not valid ---------------------


def _secret(text: str) -> str:
    if text.startswith("<") and text.endswith(">"):
        raise InvalidValue(
            "is a placeholder in <angle brackets>, copied from an example: put the bot's own Direct "
            "Line secret in its place (Azure portal: the bot > Channels > Direct Line > Secret keys)"
        )
    if not (text.isascii() and text.isprintable()) or " " in text:
        raise InvalidValue("contains white space, control or non-ASCII characters")
    return text


def _one_of(*choices: str) -> Callable[[str], str | None]:
    return lambda text: text if text in choices else None


def _text(text: str) -> str:
    return text


def _int_in(low: int, high: int) -> Callable[[str], int | None]:
    def read(text: str) -> int | None:
        value = int(text)
        return value if low <= value <= high else None

    return read


MAX_CONVERSATION_TTL = 1_209_600  # 14 days: Direct Line forgets an idle conversation after 15-20


def _ttl_or_off(text: str) -> int | None:
    value = int(text)
    return value if value == 0 or 300 <= value <= MAX_CONVERSATION_TTL else None


_REGION_RE = re.compile(r"[a-z][a-z0-9]{1,39}")
_SPEECH_RESOURCE_RE = re.compile(
    r"/subscriptions/[0-9a-f-]{36}/resourcegroups/[-\w.()]{1,90}/providers/"
    r"microsoft\.cognitiveservices/accounts/[a-z0-9][a-z0-9-]{0,62}",
    re.ASCII,
)
_SPEECH_KEY_RE = re.compile(r"[A-Za-z0-9]{20,128}")
_SPEECH_REGION_HOST = re.compile(r"(?P<region>[a-z0-9]+)\.api\.cognitive\.microsoft\.com")
_SPEECH_SUBDOMAIN_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?\.cognitiveservices\.azure\.com")


def _region(text: str) -> str | None:
    region = text.lower()
    return region if _REGION_RE.fullmatch(region) else None


def _speech_resource_id(text: str) -> str | None:
    return text.rstrip("/") if _SPEECH_RESOURCE_RE.fullmatch(text.rstrip("/").lower()) else None


def _speech_key(text: str) -> str | None:
    if text.startswith("<") and text.endswith(">"):
        raise InvalidValue(
            "is a placeholder in <angle brackets>, copied from an example: put one of the Speech "
            "resource's keys in its place, or better, SPEECH_RESOURCE_ID (no key at all)"
        )
    return text if _SPEECH_KEY_RE.fullmatch(text) else None


def _speech_endpoint(text: str) -> str | None:
    """Where a Speech key (or the identity's token) is exchanged for a Speech token: Azure's own
    hosts only, so that neither can be sent elsewhere, or a loopback host (tests, the demo)."""
    parts = _split(text)
    host = parts.hostname
    if host is None or parts.username or parts.password or parts.query or parts.fragment:
        return None
    if parts.path.rstrip("/"):
        raise InvalidValue(f"must be the host alone, with no path: {parts.scheme}://{host}")
    if is_loopback_host(host):
        return text.rstrip("/") if parts.scheme in ("http", "https") else None
    azure = _SPEECH_REGION_HOST.fullmatch(host) or _SPEECH_SUBDOMAIN_HOST.fullmatch(host)
    return text.rstrip("/") if parts.scheme == "https" and azure and parts.port in (None, 443) else None


def speech_mode(settings: Settings) -> str | None:
    """How speech tokens are minted: "identity" (SPEECH_RESOURCE_ID), "key" (SPEECH_KEY), or None
    when speech is not configured (the route answers 404 speech_not_configured)."""
    if settings.speech_region is None:
        return None
    if settings.speech_resource_id is not None:
        return "identity"
    return "key" if settings.speech_key is not None else None


def _flag(text: str) -> bool | None:
    return {"true": True, "false": False}.get(text.lower())


def _timeout(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) and 0 < value <= 60 else None


def _origins(text: str) -> tuple[OriginPattern, ...]:
    if text.lower() == NO_BROWSER_PAGES:
        return ()
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    patterns = [parse_pattern(entry) for entry in entries]
    bad = [str(n) for n, pattern in enumerate(patterns, start=1) if pattern is None]
    if bad:
        # By position, never by value: what stands where an origin belongs may be a pasted secret.
        which = f"entry {bad[0]}" if len(bad) == 1 else f"entries {', '.join(bad)}"
        raise InvalidValue(
            f"{which} of {len(entries)} is not an origin such as https://www.contoso.com or "
            "https://*.contoso.com (scheme, host and port only; not shown here, in case a secret was "
            "pasted)"
        )
    return tuple(pattern for pattern in patterns if pattern is not None)


def _split(text: str) -> SplitResult:
    """urlsplit, with the port read once so that a bad one (`:abc`, `:99999`) is a ValueError here,
    reported as a setting problem, rather than at the first request. urlsplit drops tabs and line
    breaks without a word (WHATWG's rule), so a URL with any white space is refused here first."""
    if any(character.isspace() or not character.isprintable() for character in text):
        raise InvalidValue(
            "contains white space or control characters (a tab or line break pasted with the URL?): "
            "write the URL on one line, with no spaces"
        )
    parts = urlsplit(text)
    _ = parts.port
    return parts


def _storage(text: str) -> str | None:
    if text.lower() == "memory://":
        return "memory://"
    parts = _split(text)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return None
    return parts.scheme + text[len(parts.scheme) :]  # the scheme as everything else reads it: lower case


def _http_url(text: str) -> str | None:
    parts = _split(text)
    return text if parts.scheme in ("http", "https") and parts.hostname else None


def key_url(text: str) -> str | None:
    """https anywhere; plain http only where the traffic never leaves the machine."""
    parts = _split(text)
    if not parts.hostname or parts.username or parts.password:
        return None
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname)):
        return text
    return None


def _endpoint(text: str) -> str | None:
    parts = _split(text)
    host = parts.hostname
    if host is None or parts.username or parts.password:
        return None
    if is_copilot_studio_token_url(host, parts.path):
        raise InvalidValue(_COPILOT_STUDIO_URL_PROBLEM)
    if is_loopback_host(host):
        ok = parts.scheme in ("http", "https")
    else:
        ok = parts.scheme == "https" and is_direct_line_host(host) and parts.port in (None, 443)
    if not ok:
        return None
    if parts.path.rstrip("/") != DIRECT_LINE_PATH or "?" in text or "#" in text:
        example = "http://127.0.0.1:<port>" if is_loopback_host(host) else f"https://{host}"
        raise InvalidValue(
            f"its path must be exactly {DIRECT_LINE_PATH}, the path of Direct Line's API, with no "
            f"query or fragment: {example}{DIRECT_LINE_PATH}"
        )
    return text.rstrip("/")


def signs_with_shared_secret(algorithms: tuple[str, ...]) -> bool:
    """The algorithms are of the HMAC family (a list is of one family only, see `_algorithms`)."""
    return algorithms[0] in HMAC_ALGORITHMS


def _algorithms(text: str) -> tuple[str, ...] | None:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        return None
    if all(name in HMAC_ALGORITHMS for name in names):
        return names
    if all(name in ASYMMETRIC_ALGORITHMS for name in names):
        return names
    return None  # unknown names, or HMAC mixed with public-key algorithms (key confusion)


def _handle_key(text: str) -> bytes | None:
    key = text.encode()
    return key if len(key) >= MIN_KEY_BYTES else None


def _schedule(text: str) -> str | None:
    return text if is_ncrontab(text) else None


# Azure resolves these before the app starts; one that arrives as written could not be resolved.
_REFERENCES = ("@microsoft.keyvault(", "@microsoft.appconfiguration(")
_UNRESOLVED_REFERENCE = (
    "is an unresolved reference (@Microsoft.KeyVault(...) or @Microsoft.AppConfiguration(...)): "
    "Azure could not read it, so it arrived as written. Give the app's managed identity read access "
    "(Key Vault Secrets User on the vault), check the reference's SecretUri or VaultName/SecretName, "
    "and see the app's Environment variables page for the reason; on your machine, put the value "
    "itself in local.settings.json"
)
_COPILOT_STUDIO_URL_PROBLEM = (
    "is a Copilot Studio token endpoint (…api.powerplatform.com/…/directline/token), not Direct Line: "
    "this service mints tokens itself. Turn on Require secured access in Copilot Studio (Settings > "
    "Security > Web channel security), put one of its two secrets in DIRECT_LINE_SECRET, and set "
    "DIRECT_LINE_ENDPOINT to the Direct Line endpoint of the agent's region, such as "
    "https://directline.botframework.com/v3/directline or "
    "https://europe.directline.botframework.com/v3/directline (see docs/copilot-studio.md)"
)
_CONTROL_CHARACTERS = (
    "contains control characters (a tab or line break pasted with the value?): write it on one line"
)

_LIMITS = "must be in limits notation such as {}, several joined with ;"

_HIDDEN = frozenset({
    "direct_line_secret", "direct_line_secret_secondary", "jwt_secret", "user_handle_key",
    "rate_limit_storage", "speech_key",
})

# The SPEC's settings table. Defaults that depend on other settings (USER_HANDLE_KEY, WARMUP_URL,
# AUTH_JWKS_URL) are None here and filled in by `_fill_derived`.
SETTINGS: dict[str, Setting] = {
    "DIRECT_LINE_SECRET": Setting(
        "direct_line_secret", None, _secret, "is required (the bot's Direct Line secret)", required=True,
    ),
    "DIRECT_LINE_ENDPOINT": Setting(
        "direct_line_endpoint", DEFAULT_ENDPOINT, _endpoint,
        "must be an https URL on a Direct Line host (directline.botframework.com, "
        "<region>.directline.botframework.com, directline.botframework.azure.cn), "
        "or http(s) on a loopback host",
    ),
    "ALLOWED_ORIGINS": Setting(
        "allowed_origins", "", _origins, f"must be a comma-separated list of origins, or {NO_BROWSER_PAGES}"
    ),
    "AUTH_MODE": Setting(
        "auth_mode", "anonymous", _one_of(*AUTH_MODES), "must be one of anonymous, jwt, easyauth"
    ),
    "AUTH_JWT_ISSUER": Setting("jwt_issuer", None, _text, "must be the issuer"),
    "AUTH_JWT_AUDIENCE": Setting("jwt_audience", None, _text, "must be the audience"),
    "AUTH_JWKS_URL": Setting(
        "jwks_url", None, key_url, "must be an https URL (or http on a loopback host)"
    ),
    "AUTH_JWT_ALGORITHMS": Setting(
        "jwt_algorithms", "RS256", _algorithms,
        "must be a comma-separated list of one family: "
        f"{', '.join(HMAC_ALGORITHMS)} or {', '.join(ASYMMETRIC_ALGORITHMS)}",
    ),
    "AUTH_JWT_SECRET": Setting("jwt_secret", None, _text, "must be the shared secret"),
    "AUTH_USER_CLAIM": Setting("user_claim", "sub", _text, "must name a claim"),
    "AUTH_NAME_CLAIM": Setting("name_claim", "name", _text, "must name a claim"),
    "USER_HANDLE_KEY": Setting(
        "user_handle_key", None, _handle_key, f"must be at least {MIN_KEY_BYTES} bytes long"
    ),
    "USER_HANDLE_TTL": Setting(
        "user_handle_ttl", "2592000", _int_in(60, 31_536_000),
        "must be a whole number of seconds from 60 to 31536000",
    ),
    "RATE_LIMIT": Setting("rate_limit", "10/minute", parse_limits, _LIMITS.format("10/minute")),
    "GLOBAL_RATE_LIMIT": Setting(
        "global_rate_limit", "600/minute", parse_limits, _LIMITS.format("600/minute")
    ),
    "RATE_LIMIT_STORAGE": Setting(
        "rate_limit_storage", "memory://", _storage, "must be memory://, or a redis:// or rediss:// URL"
    ),
    "TRUSTED_PROXY_HOPS": Setting(
        "trusted_proxy_hops", "1", _int_in(0, 10), "must be a whole number from 0 to 10"
    ),
    "UPSTREAM_TIMEOUT": Setting(
        "upstream_timeout", "5", _timeout, "must be a number of seconds above 0 and at most 60"
    ),
    "WARMUP_URL": Setting("warmup_url", None, _http_url, "must be an http or https URL"),
    "WARMUP_SCHEDULE": Setting(
        "warmup_schedule", DEFAULT_WARMUP_SCHEDULE, _schedule,
        "must be a six-field NCRONTAB expression such as 0 */5 * * * *",
    ),
    "AUDIT_CLIENT_IP": Setting(
        "audit_client_ip", "truncated", _one_of(*AUDIT_CLIENT_IP_MODES),
        "must be one of full, truncated, none",
    ),
    "RATE_LIMIT_IPV6_PREFIX": Setting(
        "rate_limit_ipv6_prefix", "64", _int_in(32, 64),
        "must be a prefix length from 32 to 64, such as 64 (one connection), 56 or 48 (stricter)",
    ),
    "CONVERSATION_TTL": Setting(
        "conversation_ttl", "86400", _ttl_or_off,
        "must be 0 (resuming off) or a whole number of seconds from 300 to 1209600 (14 days: Direct "
        "Line forgets an idle conversation after 15 to 20 days)",
    ),
    "DIRECT_LINE_ENHANCED_AUTH": Setting(
        "direct_line_enhanced_auth", "false", _flag,
        "must be true (the Direct Line site has Enhanced authentication options on) or false",
    ),
    "DIRECT_LINE_SECRET_SECONDARY": Setting(
        "direct_line_secret_secondary", None, _secret, "must be the Direct Line site's other secret key",
    ),
    "SPEECH_REGION": Setting(
        "speech_region", None, _region, "must be an Azure region name, such as westeurope or eastus2",
    ),
    "SPEECH_RESOURCE_ID": Setting(
        "speech_resource_id", None, _speech_resource_id,
        "must be the Speech resource's ID: /subscriptions/<id>/resourceGroups/<group>/providers/"
        "Microsoft.CognitiveServices/accounts/<name>",
    ),
    "SPEECH_KEY": Setting("speech_key", None, _speech_key, "must be one of the Speech resource's keys"),
    "SPEECH_ENDPOINT": Setting(
        "speech_endpoint", None, _speech_endpoint,
        "must be https://<region>.api.cognitive.microsoft.com, the resource's custom subdomain "
        "https://<name>.cognitiveservices.azure.com, or http(s) on a loopback host",
    ),
}


def _fill_derived(values: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Defaults that follow from other settings."""
    if values["user_handle_key"] is None:
        secret = values["direct_line_secret"]
        values["user_handle_key"] = derive_handle_key(secret) if secret else b""
    values["servers_only"] = environ.get("ALLOWED_ORIGINS", "").strip().lower() == NO_BROWSER_PAGES
    host = environ.get("WEBSITE_HOSTNAME", "").strip()
    if values["warmup_url"] is None and host:
        values["warmup_url"] = f"https://{host}/api/health"
    if values["speech_endpoint"] is None and values["speech_region"] is not None:
        values["speech_endpoint"] = f"https://{values['speech_region']}.api.cognitive.microsoft.com"
    values["on_app_service"] = bool(environ.get("WEBSITE_SITE_NAME", "").strip())
    values["azure_client_id"] = environ.get("AZURE_CLIENT_ID", "").strip() or None


def _check_together(values: Mapping[str, Any], environ: Mapping[str, str]) -> list[Problem]:
    """Rules that involve more than one setting."""
    problems = []
    if values["auth_mode"] == "jwt":
        if values["jwt_issuer"] is None:
            problems.append(Problem("AUTH_JWT_ISSUER", "is required when AUTH_MODE is jwt"))
        if values["jwt_audience"] is None:
            problems.append(Problem("AUTH_JWT_AUDIENCE", "is required when AUTH_MODE is jwt"))
        if signs_with_shared_secret(values["jwt_algorithms"]):
            secret = values["jwt_secret"]
            if secret is None:
                problems.append(Problem("AUTH_JWT_SECRET", "is required when AUTH_JWT_ALGORITHMS is HS*"))
            elif len(secret.encode()) < MIN_KEY_BYTES:
                problems.append(Problem("AUTH_JWT_SECRET", f"must be at least {MIN_KEY_BYTES} bytes long"))
        elif values["jwks_url"] is None and _quietly(key_url, values["jwt_issuer"] or "") is None:
            problems.append(
                Problem(
                    "AUTH_JWKS_URL",
                    "is required unless AUTH_JWT_ISSUER is an https URL to discover the keys from",
                )
            )
    problems += _check_speech(values, environ)
    primary, secondary = values["direct_line_secret"], values["direct_line_secret_secondary"]
    if primary and secondary and hmac.compare_digest(secondary.encode(), primary.encode()):
        problems.append(
            Problem(
                "DIRECT_LINE_SECRET_SECONDARY",
                "is the same key as DIRECT_LINE_SECRET: put the site's other secret key here",
            )
        )
    # On App Service the platform says whether its authentication runs in front of the app. Without
    # it anyone could send the principal headers and choose a user id: fail closed.
    auth_enabled = environ.get("WEBSITE_AUTH_ENABLED", "").strip().lower() == "true"
    if values["auth_mode"] == "easyauth" and values["on_app_service"] and not auth_enabled:
        problems.append(
            Problem(
                "AUTH_MODE",
                "is easyauth, but App Service Authentication is not turned on for this app "
                "(WEBSITE_AUTH_ENABLED is not True), so the principal headers could be forged",
            )
        )
    return problems


def _check_speech(values: Mapping[str, Any], environ: Mapping[str, str]) -> list[Problem]:
    """Speech is all or nothing: a region and exactly one credential, the endpoint in that region."""
    given = {name for name in SPEECH_SETTINGS if environ.get(name, "").strip()}
    if not given:
        return []
    region, endpoint = values["speech_region"], values["speech_endpoint"]
    problems = []
    if "SPEECH_REGION" not in given:
        problems.append(Problem("SPEECH_REGION", _SPEECH_NEEDS_REGION))
    credentials = given & {"SPEECH_RESOURCE_ID", "SPEECH_KEY"}
    if not credentials:
        problems.append(Problem("SPEECH_RESOURCE_ID", _SPEECH_NEEDS_CREDENTIAL))
    elif len(credentials) == 2:
        problems.append(Problem("SPEECH_KEY", _SPEECH_ONE_CREDENTIAL))
    match = _SPEECH_REGION_HOST.fullmatch(urlsplit(endpoint).hostname or "") if endpoint else None
    if match is not None and region is not None and match["region"] != region:
        problems.append(Problem("SPEECH_ENDPOINT", f"is in {match['region']}, not in SPEECH_REGION {region}"))
    return problems


SPEECH_SETTINGS = ("SPEECH_REGION", "SPEECH_RESOURCE_ID", "SPEECH_KEY", "SPEECH_ENDPOINT")
_SPEECH_NEEDS_REGION = "is required for speech: the Speech resource's region, such as westeurope"
_SPEECH_NEEDS_CREDENTIAL = (
    "or SPEECH_KEY is required for speech: the Speech resource's ID (the app's managed identity then "
    "mints the tokens, with no key anywhere) or, for local runs, one of its keys"
)
_SPEECH_ONE_CREDENTIAL = "is set as well as SPEECH_RESOURCE_ID: set one (the managed identity needs no key)"


CA_BUNDLE_SETTINGS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # requests' own, in its order


def ca_bundle_of(environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The variable that chooses the CA bundle (None: certifi's own) and the bundle's path."""
    from tokens import trust

    name = next((name for name in CA_BUNDLE_SETTINGS if environ.get(name, "").strip()), None)
    return name, environ[name].strip() if name else trust.default_bundle()


def _check_ca_bundle(values: dict[str, Any], environ: Mapping[str, str]) -> list[Problem]:
    """The CA bundle that every TLS call will trust, loaded now: an unreadable one is a problem
    named after the variable that points at it, rather than a failure of every call."""
    from tokens import trust

    name, values["ca_bundle"] = ca_bundle_of(environ)
    try:
        trust.context(values["ca_bundle"])
    except trust.Unreadable as error:
        setting = name or CA_BUNDLE_SETTINGS[0]
        where = "certifi's own CA bundle" if name is None else "it"
        return [Problem(setting, f"{where} cannot be used to verify TLS: {error}")]
    return []


def _quietly(read: Callable[[str], Any], text: str) -> Any:
    try:
        return read(text)
    except ValueError:
        return None


# NCRONTAB: second minute hour day month day-of-week, each with its range; names allowed where
# Azure allows them.
_CRON_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _is_ascii_number(text: str) -> bool:
    """0-9 only: str.isdigit() also takes "²" and other digits that int() refuses."""
    return text.isascii() and text.isdigit()


def _cron_value(text: str, index: int) -> int | None:
    lowered = text.lower()
    if index == 4 and lowered in _MONTHS:
        return _MONTHS.index(lowered) + 1
    if index == 5 and lowered in _DAYS:
        return _DAYS.index(lowered)
    if not _is_ascii_number(text):
        return None
    value = int(text)
    low, high = _CRON_RANGES[index]
    return value if low <= value <= high else None


def _cron_field_ok(text: str, index: int) -> bool:
    for item in text.split(","):
        base, slash, step = item.partition("/")
        if slash and (not _is_ascii_number(step) or int(step) == 0):
            return False
        if base == "*":
            continue
        start, dash, end = base.partition("-")
        first = _cron_value(start, index)
        if first is None:
            return False
        if dash:
            last = _cron_value(end, index)
            if last is None or last < first:
                return False
    return True


def is_ncrontab(expression: str) -> bool:
    fields = expression.split()
    return len(fields) == 6 and all(_cron_field_ok(text, i) for i, text in enumerate(fields))

"""Settings: every app setting of the SPEC, parsed and validated together.

`Settings.from_env(environ)` either returns a frozen `Settings` or raises `SettingsError` carrying every
problem at once, each named by its setting. Messages describe what is wrong with a value without ever
repeating a secret's value.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import SplitResult, urlsplit

from tokens.origins import OriginPattern, parse_pattern

if TYPE_CHECKING:  # `limits` is imported on first use: function_app imports this module at start-up
    from limits import RateLimitItem

DEFAULT_ENDPOINT = "https://directline.botframework.com/v3/directline"
DEFAULT_WARMUP_SCHEDULE = "0 */5 * * * *"
AUTH_MODES = ("anonymous", "jwt", "easyauth")
AUDIT_CLIENT_IP_MODES = ("full", "truncated", "none")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)
MIN_KEY_BYTES = 32
_HANDLE_KEY_LABEL = b"directline-token-service/user-handle-key/v1"

# Direct Line's public, regional and sovereign hosts; the secret may be sent to these only.
_DIRECT_LINE_HOSTS = ("directline.botframework.com", "directline.botframework.azure.cn")
_REGIONAL_HOST_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.directline\.botframework\.com")


@dataclass(frozen=True)
class Problem:
    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


class SettingsError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in problems))

    @property
    def setting_names(self) -> list[str]:
        return sorted({problem.setting for problem in self.problems})


@dataclass(frozen=True)
class Settings:
    direct_line_secret: str = field(repr=False)
    direct_line_endpoint: str = DEFAULT_ENDPOINT
    allowed_origins: tuple[OriginPattern, ...] = ()
    auth_mode: str = "anonymous"
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwks_url: str | None = None
    jwt_algorithms: tuple[str, ...] = ("RS256",)
    jwt_secret: str | None = field(default=None, repr=False)
    user_claim: str = "sub"
    name_claim: str = "name"
    user_handle_key: bytes = field(default=b"", repr=False)
    user_handle_ttl: int = 2_592_000
    rate_limit: tuple[RateLimitItem, ...] = ()
    global_rate_limit: tuple[RateLimitItem, ...] = ()
    rate_limit_storage: str = field(default="memory://", repr=False)
    trusted_proxy_hops: int = 1
    upstream_timeout: float = 5.0
    warmup_url: str | None = None
    warmup_schedule: str = DEFAULT_WARMUP_SCHEDULE
    audit_client_ip: str = "truncated"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        return _Parser(environ).parse()


def load_settings(environ: Mapping[str, str] | None = None, dotenv_path: Path | None = None) -> Settings:
    """Read `.env` (never overriding a real environment variable), then validate."""
    if environ is None:
        from dotenv import find_dotenv, load_dotenv

        # The .env of the directory the command runs in, as a developer expects.
        load_dotenv(dotenv_path=dotenv_path or find_dotenv(usecwd=True), override=False)
        environ = os.environ
    return Settings.from_env(environ)


def derive_handle_key(secret: str) -> bytes:
    """A handle key tied to the secret, so that rotating the secret also retires old handles."""
    return hmac.new(secret.encode(), _HANDLE_KEY_LABEL, hashlib.sha256).digest()


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_direct_line_host(host: str) -> bool:
    return host in _DIRECT_LINE_HOSTS or _REGIONAL_HOST_RE.fullmatch(host) is not None


T = TypeVar("T")


class _Parser:
    """Collects every problem instead of stopping at the first one."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.env = environ
        self.problems: list[Problem] = []

    def get(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def problem(self, name: str, message: str) -> None:
        self.problems.append(Problem(name, message))

    def optional(self, name: str, default: T, convert: Callable[[str], T | None], expected: str) -> T:
        """Convert one optional setting; on failure record `expected` and fall back to the default."""
        raw = self.get(name)
        if raw is None:
            return default
        value = _quietly(convert, raw)
        if value is None:
            self.problem(name, expected)
            return default
        return value

    def parse(self) -> Settings:
        secret = self._secret()
        settings = Settings(
            direct_line_secret=secret,
            direct_line_endpoint=self.optional(
                "DIRECT_LINE_ENDPOINT", DEFAULT_ENDPOINT, _endpoint,
                "must be an https URL on a Direct Line host (directline.botframework.com, "
                "<region>.directline.botframework.com, directline.botframework.azure.cn), "
                "or http(s) on a loopback host",
            ),
            allowed_origins=self._origins(),
            auth_mode=self.optional(
                "AUTH_MODE", "anonymous", lambda v: v if v in AUTH_MODES else None,
                "must be one of anonymous, jwt, easyauth",
            ),
            jwt_issuer=self.get("AUTH_JWT_ISSUER"),
            jwt_audience=self.get("AUTH_JWT_AUDIENCE"),
            jwks_url=self.optional(
                "AUTH_JWKS_URL", None, key_url, "must be an https URL (or http on a loopback host)",
            ),
            jwt_algorithms=self.optional(
                "AUTH_JWT_ALGORITHMS", ("RS256",), _algorithms,
                "must be a comma-separated list of one family: "
                f"{', '.join(HMAC_ALGORITHMS)} or {', '.join(ASYMMETRIC_ALGORITHMS)}",
            ),
            jwt_secret=self.get("AUTH_JWT_SECRET"),
            user_claim=self.get("AUTH_USER_CLAIM") or "sub",
            name_claim=self.get("AUTH_NAME_CLAIM") or "name",
            user_handle_key=self._handle_key(secret),
            user_handle_ttl=self.optional(
                "USER_HANDLE_TTL", 2_592_000, lambda v: _int_in(v, 60, 31_536_000),
                "must be a whole number of seconds from 60 to 31536000",
            ),
            rate_limit=self.optional(
                "RATE_LIMIT", _limits("10/minute") or (), _limits,
                "must be in limits notation such as 10/minute, several joined with ;",
            ),
            global_rate_limit=self.optional(
                "GLOBAL_RATE_LIMIT", _limits("600/minute") or (), _limits,
                "must be in limits notation such as 600/minute, several joined with ;",
            ),
            rate_limit_storage=self.optional(
                "RATE_LIMIT_STORAGE", "memory://", _storage,
                "must be memory://, or a redis:// or rediss:// URL",
            ),
            trusted_proxy_hops=self.optional(
                "TRUSTED_PROXY_HOPS", 1, lambda v: _int_in(v, 0, 10), "must be a whole number from 0 to 10",
            ),
            upstream_timeout=self.optional(
                "UPSTREAM_TIMEOUT", 5.0, _timeout, "must be a number of seconds above 0 and at most 60",
            ),
            warmup_url=self._warmup_url(),
            warmup_schedule=self.optional(
                "WARMUP_SCHEDULE", DEFAULT_WARMUP_SCHEDULE,
                lambda v: v if is_ncrontab(v) else None,
                "must be a six-field NCRONTAB expression such as 0 */5 * * * *",
            ),
            audit_client_ip=self.optional(
                "AUDIT_CLIENT_IP", "truncated", lambda v: v if v in AUDIT_CLIENT_IP_MODES else None,
                "must be one of full, truncated, none",
            ),
        )
        if settings.auth_mode == "jwt":
            self._check_jwt(settings)
        if settings.auth_mode == "easyauth":
            self._check_easyauth()
        if self.problems:
            raise SettingsError(self.problems)
        return settings

    def _secret(self) -> str:
        secret = self.get("DIRECT_LINE_SECRET")
        if secret is None:
            self.problem("DIRECT_LINE_SECRET", "is required (the bot's Direct Line secret)")
            return ""
        if not secret.isascii() or any(ch.isspace() or not ch.isprintable() for ch in secret):
            self.problem("DIRECT_LINE_SECRET", "contains white space, control or non-ASCII characters")
        return secret

    def _origins(self) -> tuple[OriginPattern, ...]:
        raw = self.get("ALLOWED_ORIGINS")
        if raw is None:
            return ()
        patterns = []
        for entry in (part.strip() for part in raw.split(",")):
            if not entry:
                continue
            pattern = parse_pattern(entry)
            if pattern is None:
                self.problem(
                    "ALLOWED_ORIGINS",
                    f"{entry[:80]!r} is not an origin such as https://www.contoso.com "
                    "or https://*.contoso.com",
                )
            else:
                patterns.append(pattern)
        return tuple(patterns)

    def _handle_key(self, secret: str) -> bytes:
        raw = self.get("USER_HANDLE_KEY")
        if raw is None:
            return derive_handle_key(secret) if secret else b""
        if len(raw.encode()) < MIN_KEY_BYTES:
            self.problem("USER_HANDLE_KEY", f"must be at least {MIN_KEY_BYTES} bytes long")
        return raw.encode()

    def _warmup_url(self) -> str | None:
        raw = self.get("WARMUP_URL")
        if raw is not None:
            url = _quietly(_http_url, raw)
            if url is None:
                self.problem("WARMUP_URL", "must be an http or https URL")
            return url
        host = self.get("WEBSITE_HOSTNAME")
        return f"https://{host}/api/health" if host else None

    def _check_easyauth(self) -> None:
        # On App Service the platform says whether its authentication runs in front of the app.
        # Without it anyone could send the principal headers and choose a user id: fail closed.
        on_app_service = self.get("WEBSITE_SITE_NAME") is not None
        if on_app_service and (self.get("WEBSITE_AUTH_ENABLED") or "").lower() != "true":
            self.problem(
                "AUTH_MODE",
                "is easyauth, but App Service Authentication is not turned on for this app "
                "(WEBSITE_AUTH_ENABLED is not True), so the principal headers could be forged",
            )

    def _check_jwt(self, settings: Settings) -> None:
        if settings.jwt_issuer is None:
            self.problem("AUTH_JWT_ISSUER", "is required when AUTH_MODE is jwt")
        if settings.jwt_audience is None:
            self.problem("AUTH_JWT_AUDIENCE", "is required when AUTH_MODE is jwt")
        if settings.jwt_algorithms[0] in HMAC_ALGORITHMS:
            if settings.jwt_secret is None:
                self.problem("AUTH_JWT_SECRET", "is required when AUTH_JWT_ALGORITHMS is HS*")
            elif len(settings.jwt_secret.encode()) < MIN_KEY_BYTES:
                self.problem("AUTH_JWT_SECRET", f"must be at least {MIN_KEY_BYTES} bytes long")
        elif (
            settings.jwks_url is None
            and settings.jwt_issuer is not None
            and _quietly(key_url, settings.jwt_issuer) is None
        ):
            self.problem(
                    "AUTH_JWKS_URL",
                    "is required unless AUTH_JWT_ISSUER is an https URL to discover the keys from",
                )


def _quietly(convert: Callable[[str], T | None], text: str) -> T | None:
    try:
        return convert(text)
    except ValueError:
        return None


def _int_in(text: str, low: int, high: int) -> int | None:
    value = int(text)
    return value if low <= value <= high else None


def _timeout(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) and 0 < value <= 60 else None


def _limits(text: str) -> tuple[RateLimitItem, ...] | None:
    from limits import parse_many

    return tuple(parse_many(text)) or None


def _split(text: str) -> SplitResult:
    """urlsplit, with the port read once so that a bad one (`:abc`, `:99999`) is a ValueError here,
    reported as a setting problem, rather than at the first request."""
    parts = urlsplit(text)
    _ = parts.port
    return parts


def _storage(text: str) -> str | None:
    if text == "memory://":
        return text
    parts = _split(text)
    return text if parts.scheme in ("redis", "rediss") and parts.hostname else None


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
    if host is None or parts.username or parts.password or parts.query or parts.fragment:
        return None
    if is_loopback_host(host):
        ok = parts.scheme in ("http", "https")
    else:
        ok = parts.scheme == "https" and is_direct_line_host(host) and parts.port in (None, 443)
    return text.rstrip("/") if ok else None


def _algorithms(text: str) -> tuple[str, ...] | None:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        return None
    if all(name in HMAC_ALGORITHMS for name in names):
        return names
    if all(name in ASYMMETRIC_ALGORITHMS for name in names):
        return names
    return None  # unknown names, or HMAC mixed with public-key algorithms (key confusion)


# NCRONTAB: second minute hour day month day-of-week, each with its range; names allowed where
# Azure allows them.
_CRON_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def _cron_value(text: str, index: int) -> int | None:
    lowered = text.lower()
    if index == 4 and lowered in _MONTHS:
        return _MONTHS.index(lowered) + 1
    if index == 5 and lowered in _DAYS:
        return _DAYS.index(lowered)
    if not text.isdigit():
        return None
    value = int(text)
    low, high = _CRON_RANGES[index]
    return value if low <= value <= high else None


def _cron_field_ok(text: str, index: int) -> bool:
    for item in text.split(","):
        base, slash, step = item.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
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

"""The operator settings: one class, each field read from the environment variable of its
name in upper case; `load_settings` reads them and reports a bad value by its variable."""

from __future__ import annotations

import enum
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, NamedTuple
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.config.values import (
    ConfigError,
    DatabaseTarget,
    Seconds,
    parse_bind_address,
    split_commas,
    translate_database_url,
)


class BuiltinChart(NamedTuple):
    """A built-in chart put in the catalog at start (`name:version` in BUILTIN_CHARTS)."""

    name: str
    version: str


_BUILTIN_CHART = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?):(\d+\.\d+\.\d+[-+.0-9A-Za-z]*)$")


class Mode(enum.StrEnum):
    minimal = "minimal"
    production = "production"
    multi_cluster = "multi-cluster"


# Values that appear in documentation and examples; running production with them is a breach.
PLACEHOLDER_SECRETS = frozenset(
    {"your-jwt-secret-key", "edge-secret", "changeme", "change-me", "secret", "password"}
)
MIN_SECRET_BYTES = 32
# Passwords found in documentation and default installs of similar platforms.
WELL_KNOWN_PASSWORDS = frozenset(
    {"admin", "password", "changeme", "change-me", "admin123", "p@88w0rd", "123456", "edge",
     "edge-platform", "12345678", "administrator", "root", "passw0rd"}
)  # fmt: skip
MIN_PRODUCTION_PASSWORD = 12


class Settings(BaseSettings):
    """Every operator setting, each with its environment variable name (upper case)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    edge_mode: Mode = Field(
        Mode.minimal, description="Deployment mode: minimal | production | multi-cluster."
    )

    database_url: str | None = Field(
        None, description="libpq URL incl. sslmode; unset in `dev` means embedded PostgreSQL."
    )
    database_pool_size: int = Field(
        10, ge=1, le=200, description="Connections a process keeps, opened as it needs them."
    )
    database_max_overflow: int = Field(
        10,
        ge=0,
        le=200,
        description="Extra connections at peak, each closed as soon as it is returned (opening "
        "one costs PostgreSQL a new process: a process that serves more requests at once than "
        "its pool for long is better given a larger pool).",
    )
    database_pool_timeout: Seconds = Field(5.0, description="Wait for a free pooled connection.")
    database_connect_timeout: Seconds = Field(5.0, description="Timeout to open a connection.")
    database_statement_timeout: Seconds = Field(
        30.0, description="Server-side statement_timeout for every statement."
    )

    redis_addresses: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Redis Cluster seed nodes, `host:port,host:port`.",
    )
    redis_url: str | None = Field(None, description="One Redis server (redis://, rediss://).")
    redis_timeout: Seconds = Field(0.5, description="Socket timeout of every Redis call.")

    jwt_secret: str | None = Field(None, description="HS256 signing secret, >= 32 bytes.")
    oauth_client_id: str = Field("edge-console", description="OAuth client id of the console.")
    oauth_client_secret: str | None = Field(None, description="OAuth client secret.")
    oauth_issuer: str | None = Field(None, description="External OIDC issuer URL.")
    admin_password: str | None = Field(None, description="Bootstrap password of user `admin`.")
    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="External base URL of the API: token issuer (`iss`) and OAuth redirects.",
    )
    jwt_private_key_file: Path | None = Field(
        None, description="PEM RSA or EC private key: sign RS256/ES256 with a `kid` (JWKS)."
    )
    access_token_ttl: Seconds = Field(3600.0, description="Access token lifetime.")
    refresh_token_ttl: Seconds = Field(7 * 86400.0, description="Refresh token lifetime.")
    login_lockout_failures: int = Field(
        5, ge=1, description="Failed logins of one user within the window that lock it."
    )
    login_lockout_window: Seconds = Field(900.0, description="Window of the login lockout.")
    rate_limit_token_per_minute: int = Field(
        60, ge=1, description="Requests to /oauth/token per client IP and minute."
    )
    rate_limit_api_per_minute: int = Field(
        3000, ge=1, description="API requests per principal and minute."
    )
    rate_limit_secret_checks_per_minute: int = Field(
        30,
        ge=1,
        description="Basic-auth secret checks per client address, and per client id, and "
        "minute; a secret verified in the last few minutes is not checked again.",
    )
    rate_limit_inflight_per_principal: int = Field(
        16,
        ge=1,
        description="Requests of one principal handled at once by one process, until each "
        "response starts; more wait a second for a turn, then get 429.",
    )
    request_body_timeout: Seconds = Field(
        30.0,
        description="Time to receive a whole request body; slower ones get 408. Bodies are "
        "read before authentication, so no slow sender holds a database connection.",
    )
    encryption_key: str | None = Field(None, description="Key for secrets at rest.")
    encryption_keys_previous: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Earlier ENCRYPTION_KEY values, comma-separated: still decrypt until "
        "`edge-platform rotate-key` has re-encrypted everything.",
    )

    edge_state_dir: Path = Field(Path(".edge-platform"), description="State folder of `dev`.")
    allow_private_cluster_endpoints: bool | None = Field(
        None, description="Allow loopback/private cluster API addresses (default: true in dev)."
    )
    allow_insecure_cluster_endpoints: bool = Field(
        False, description="Allow http:// cluster API addresses."
    )
    cluster_probe_interval: Seconds = Field(10.0, description="How often each cluster is probed.")
    cluster_unreachable_after: Seconds = Field(
        40.0, description="Failed-probe grace before a cluster is Unreachable."
    )
    drift_check_interval: Seconds = Field(60.0, description="Re-check period of applied targets.")
    event_retention: Seconds = Field(
        7 * 24 * 3600.0, description="How long events are kept (lists and stream resumes)."
    )
    event_heartbeat_interval: Seconds = Field(
        15.0, description="Comment sent on an idle event stream so proxies keep it open."
    )
    dispatch_status_interval: Seconds = Field(
        2.0, description="How often a target that is applied but not yet Ready is re-read."
    )
    dispatch_retry_max: Seconds = Field(
        300.0, description="Cap of the exponential backoff between retries of an edge call."
    )
    dispatch_concurrency: int = Field(
        64, ge=1, le=10000, description="Targets one controller works on at once."
    )
    dispatch_lease_duration: Seconds = Field(
        120.0,
        description="How long a controller holds a target it works on; a controller that dies "
        "holding one delays that target by at most this much.",
    )
    dispatch_per_cluster: int = Field(
        4, ge=1, le=1000, description="Targets of one edge cluster worked on at once."
    )
    charts_dir: Path | None = Field(None, description="Built-in charts loaded at start.")
    builtin_charts: Annotated[list[BuiltinChart], NoDecode] = Field(
        default_factory=lambda: [
            BuiltinChart("monitoring-stack", "1.5.0"),
            BuiltinChart("logging-stack", "1.2.0"),
            BuiltinChart("ingress-nginx", "4.8.0"),
        ],
        description="Built-in charts put in the catalog at start (an Application and its "
        "version each), `name:version,name:version`; empty: none. Every built-in chart is in "
        "the chart repository whatever this says.",
    )
    agent_join_token_ttl: Seconds = Field(
        24 * 3600.0, gt=0, description="How long a cluster's join token can be used."
    )
    agent_credential_rotation: Seconds = Field(
        24 * 3600.0,
        gt=0,
        description="Age after which an edge agent replaces its credential with a new one.",
    )
    agent_proxy_url: str | None = Field(
        None,
        description="Where the controller reaches the API's agent tunnels (any API replica "
        "forwards to the one holding an agent's connection); default PUBLIC_URL.",
    )
    tunnel_advertise_url: str | None = Field(
        None,
        description="This API replica's own address as the other replicas reach it, for "
        "requests to agents connected here (the chart: the pod's IP); default PUBLIC_URL.",
    )

    api_server_args: str = Field("", description="Command-line flags given through the env.")
    log_level: str = Field("info", description="debug | info | warning | error.")
    metrics_bind_address: str | None = Field(
        None, description="Extra listener serving only /metrics, `host:port` (0 disables)."
    )
    health_probe_bind_address: str | None = Field(
        None, description="Extra listener serving only /healthz, /livez, /readyz."
    )
    leader_elect: bool = Field(False, description="Run singleton duties under leader election.")
    leader_elect_lease_duration: Seconds = Field(15.0, description="Leader lease duration.")
    leader_elect_renew_deadline: Seconds = Field(10.0, description="Leader renew deadline.")
    leader_elect_retry_period: Seconds = Field(2.0, description="Leader election retry period.")

    console_api_url: str = Field(
        "http://127.0.0.1:8000",
        description="The API as the console process reaches it (it uses nothing else).",
    )
    console_session_secret: str | None = Field(
        None,
        description="Key of the console's encrypted session cookie (>= 32 bytes in production; "
        "`dev` keeps one in the state folder).",
    )
    console_forwarding_secret: str | None = Field(
        None,
        description="Shared by the API and the console (>= 32 bytes in production): the "
        "console proves with it the browser address it signs users in from, so the API's "
        "per-address sign-in limit counts each browser rather than the console. Unset on "
        "either side: the console's own address. `dev` keeps one in the state folder.",
    )
    console_public_url: str | None = Field(
        None,
        description="The console as browsers reach it (https://console.example.com). With "
        "OAUTH_ISSUER, the console offers sign-in through the issuer, whose client must allow "
        "the redirect URI <CONSOLE_PUBLIC_URL>/login/oidc/callback. Set for the API and the "
        "console alike; `dev` sets it to its console's address.",
    )
    console_cookie_secure: bool = Field(
        True,
        description="Mark the console's cookies Secure (browsers still send them to "
        "http://localhost); turn off only behind plain HTTP on another host.",
    )

    def console_oidc_redirect(self) -> str | None:
        """Where the issuer sends a browser back to the console, when the console may sign in
        through the issuer."""
        if not (self.oauth_issuer and self.console_public_url):
            return None
        return f"{self.console_public_url.rstrip('/')}/login/oidc/callback"

    @field_validator("redis_addresses", "encryption_keys_previous", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return split_commas(value)

    @field_validator("builtin_charts", mode="before")
    @classmethod
    def _builtin_charts(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        charts = []
        for item in split_commas(value):
            match = _BUILTIN_CHART.match(item)
            if match is None:
                raise ValueError(f"{item!r} is not name:version (e.g. monitoring-stack:1.5.0)")
            charts.append(BuiltinChart(match.group(1), match.group(3)))
        return charts

    @field_validator("redis_addresses")
    @classmethod
    def _addresses_have_ports(cls, value: list[str]) -> list[str]:
        for address in value:
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{address!r} is not host:port")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.lower()
        if level not in ("debug", "info", "warning", "error", "critical"):
            raise ValueError("must be one of debug, info, warning, error, critical")
        return level

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("agent_proxy_url", "tunnel_advertise_url")
    @classmethod
    def _internal_url(cls, value: str | None) -> str | None:
        return None if value is None else cls._public_url(value)

    @field_validator("oauth_issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("metrics_bind_address", "health_probe_bind_address")
    @classmethod
    def _bind_address(cls, value: str | None) -> str | None:
        if value in (None, "", "0"):
            return None
        parse_bind_address(value)
        return value

    @property
    def database(self) -> DatabaseTarget:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set (only `edge-platform dev` embeds one)")
        return translate_database_url(self.database_url)

    def check_production_secrets(self) -> None:
        """Refuse to run production with placeholder or short secrets, naming the setting."""
        if self.edge_mode is not Mode.production:
            return
        _check_production_secret("JWT_SECRET", self.jwt_secret, required=True)
        _check_production_secret("OAUTH_CLIENT_SECRET", self.oauth_client_secret, required=False)
        _check_production_secret("ENCRYPTION_KEY", self.encryption_key, required=True)
        _check_production_secret(
            "CONSOLE_FORWARDING_SECRET", self.console_forwarding_secret, required=False
        )
        if self.admin_password is not None and (
            self.admin_password.lower() in WELL_KNOWN_PASSWORDS
            or len(self.admin_password) < MIN_PRODUCTION_PASSWORD
        ):
            raise ConfigError(
                "ADMIN_PASSWORD is a well-known or short password; production mode needs at "
                f"least {MIN_PRODUCTION_PASSWORD} characters that are not a documented default"
            )
        if not self.database_url:
            raise ConfigError("DATABASE_URL must be set in production mode")
        if not (self.redis_url or self.redis_addresses):
            raise ConfigError("REDIS_ADDRESSES or REDIS_URL must be set in production mode")

    def console_secret(self) -> str:
        """The key of the console's session cookies. Outside production an unset one is made
        up per process: sessions then end when the console restarts."""
        if self.edge_mode is Mode.production:
            _check_production_secret(
                "CONSOLE_SESSION_SECRET", self.console_session_secret, required=True
            )
        return self.console_session_secret or secrets.token_urlsafe(32)

    def console_forwarding_key(self) -> str | None:
        """The secret the console proves its browsers' addresses with. Production needs it:
        without it every sign-in through the console counts against one address, and one
        person's wrong passwords lock all console users out."""
        if self.edge_mode is Mode.production:
            _check_production_secret(
                "CONSOLE_FORWARDING_SECRET", self.console_forwarding_secret, required=True
            )
        return self.console_forwarding_secret


def _check_production_secret(env_name: str, value: str | None, *, required: bool) -> None:
    """Refuse a missing (when required), placeholder or short secret, naming the setting."""
    if value is None:
        if required:
            raise ConfigError(f"{env_name} must be set in production mode")
        return
    if value.strip().lower() in PLACEHOLDER_SECRETS:
        raise ConfigError(
            f"{env_name} is the documented placeholder {value!r}; "
            "set a random secret in production mode"
        )
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{env_name} is {len(value.encode())} bytes; production mode needs "
            f"at least {MIN_SECRET_BYTES}"
        )


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; a bad value becomes a ConfigError naming the variable."""
    try:
        return Settings(**overrides)
    except ValueError as exc:
        raise ConfigError(_describe_validation_error(exc)) from exc


def _describe_validation_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        lines = []
        for error in errors():
            name = str(error["loc"][0]).upper() if error.get("loc") else "setting"
            lines.append(f"{name}: {error['msg']}")
        return "; ".join(lines)
    return str(exc)

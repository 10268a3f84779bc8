"""The edge agent's settings. Each comes from, highest precedence first: the command line, the
environment, a file of the mounted Secret directory (`--secret-dir`, default /etc/edge-agent
when it exists), the default. The platform's own settings (app.config: database, Redis, signing
keys) are not read: the agent needs none of them.

| flag | environment | secret file | default |
|---|---|---|---|
| `--platform-url` | `EDGE_AGENT_PLATFORM_URL` | `platformUrl` | required |
| `--token` | `EDGE_AGENT_TOKEN` | `token` | none |
| `--platform-ca-file` | `EDGE_AGENT_PLATFORM_CA_FILE` | `platformCA` | the system's CAs |
| `--kubeconfig` | `KUBECONFIG` | | in-cluster, else ~/.kube/config |
| `--credential-secret` | `EDGE_AGENT_CREDENTIAL_SECRET` | | `edge-agent-credential` |
| `--state-file` | `EDGE_AGENT_STATE_FILE` | | ~/.config/edge-agent/credential.json |
| `--secret-dir` | `EDGE_AGENT_SECRET_DIR` | | /etc/edge-agent, when it exists |
| `--log-level` | `EDGE_AGENT_LOG_LEVEL` | | `info` |

The outbound connection to the platform honours the standard proxy variables (`HTTPS_PROXY`,
`NO_PROXY`, …); the local API server is always reached directly.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from app import __version__
from app.config import ConfigError

logger = logging.getLogger(__name__)

AGENT_VERSION = __version__
DEFAULT_SECRET_DIR = Path("/etc/edge-agent")
DEFAULT_CREDENTIAL_SECRET = "edge-agent-credential"  # noqa: S105 - a Secret's name
DEFAULT_STATE_FILE = "~/.config/edge-agent/credential.json"
LOG_LEVELS = ("debug", "info", "warning", "error")

JOIN_PATH = "/api/v1/agent/join"
CREDENTIAL_PATH = "/api/v1/agent/credential"
TUNNEL_PATH = "/api/v1/agent/tunnel"

# Which environment variable and which file of the Secret directory give each setting.
ENVIRONMENT = {
    "platform_url": "EDGE_AGENT_PLATFORM_URL",
    "token": "EDGE_AGENT_TOKEN",
    "platform_ca_file": "EDGE_AGENT_PLATFORM_CA_FILE",
    "kubeconfig": "KUBECONFIG",
    "credential_secret": "EDGE_AGENT_CREDENTIAL_SECRET",
    "state_file": "EDGE_AGENT_STATE_FILE",
    "secret_dir": "EDGE_AGENT_SECRET_DIR",
    "log_level": "EDGE_AGENT_LOG_LEVEL",
}
SECRET_FILES = {"platform_url": "platformUrl", "token": "token", "platform_ca_file": "platformCA"}

# A Secret's name: an RFC 1123 subdomain.
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_TOKEN_CHARS = 4096


def token_digest(token: str) -> str:
    """What the agent keeps of a join token: enough to tell a new token from the used one."""
    return hashlib.sha256(token.encode()).hexdigest()


class JoinTokenSource:
    """Where the join token comes from. One given on the command line or in the environment is
    fixed for the life of the process; one in the Secret directory is read again whenever it
    is needed, so an operator installs a new token by updating the Secret (the kubelet updates
    a mounted Secret in place) without restarting the agent. The value is never shown."""

    def __init__(self, value: str | None = None, path: Path | None = None) -> None:
        self._value = _clean_token(value) if value is not None else None
        self._path = path

    def current(self) -> str | None:
        if self._value is not None:
            return self._value
        if self._path is None:
            return None
        try:
            text = self._path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("the join token file %s cannot be read: %s", self._path, exc.strerror)
            return None
        try:
            return _clean_token(text)
        except ConfigError as exc:
            logger.warning("the join token in %s is not used: %s", self._path, exc)
            return None

    def describe(self) -> str:
        if self._value is not None:
            return "given"
        if self._path is not None:
            return f"read from {self._path}"
        return "none"

    def __repr__(self) -> str:
        return f"JoinTokenSource({self.describe()})"


def _clean_token(text: str) -> str | None:
    # Files made with `echo` or kubectl end in a newline; the token itself has no spaces.
    token = text.strip()
    if not token:
        return None
    if len(token) > MAX_TOKEN_CHARS or any(not c.isprintable() or c.isspace() for c in token):
        raise ConfigError("the join token has spaces or control characters, or is too long")
    return token


@dataclass(frozen=True)
class AgentSettings:
    platform_url: str  # http(s)://host[:port][/prefix], without a trailing slash
    join_token: JoinTokenSource = field(default_factory=JoinTokenSource)
    platform_ca_file: Path | None = None
    kubeconfig: str | None = None  # one path, or several separated by os.pathsep (KUBECONFIG)
    credential_secret: str = DEFAULT_CREDENTIAL_SECRET
    state_file: Path = field(default_factory=lambda: Path(DEFAULT_STATE_FILE).expanduser())
    log_level: str = "info"
    namespace: str | None = None  # POD_NAMESPACE (the downward API); else the token's namespace
    # Timings; tests shorten them. Reconnection: capped exponential backoff with full jitter,
    # back to the base once a connection has stayed up for `stable_connection_seconds`.
    reconnect_base_seconds: float = 1.0
    reconnect_max_seconds: float = 60.0
    stable_connection_seconds: float = 30.0
    rotation_check_seconds: float = 3600.0
    connect_timeout_seconds: float = 10.0

    def platform_endpoint(self, path: str) -> str:
        return f"{self.platform_url}{path}"

    @property
    def tunnel_url(self) -> str:
        scheme, rest = self.platform_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{TUNNEL_PATH}"

    @property
    def encrypted(self) -> bool:
        return self.platform_url.startswith("https://")


def check_platform_url(value: str) -> str:
    """The platform's base URL, checked: http(s), a host, no credentials, query or fragment."""
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"the platform's address {text!r} is not an http(s) URL with a host "
            "(e.g. https://edge.example.com)"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError("the platform's address must not hold credentials (user:password@)")
    if parts.query or parts.fragment:
        raise ConfigError("the platform's address must not have a query or a fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        raise ConfigError(f"the platform's address {text!r} has an invalid port") from None
    return text.rstrip("/")


def add_agent_flags(parser: argparse.ArgumentParser) -> None:
    """The `agent` command's flags; each defaults to None so that the environment and the
    Secret directory can be told apart from an explicit value."""
    parser.add_argument(
        "--platform-url", help="the platform's address, e.g. https://edge.example.com"
    )
    parser.add_argument(
        "--token",
        help="the cluster's join token (used once, when no credential is stored yet); prefer "
        "EDGE_AGENT_TOKEN or the Secret directory: a command line is visible to other users",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig of the local cluster (outside a pod)")
    parser.add_argument(
        "--credential-secret",
        help=f"Secret the credential is kept in, in a pod (default {DEFAULT_CREDENTIAL_SECRET})",
    )
    parser.add_argument(
        "--state-file", help=f"file the credential is kept in, outside a pod ({DEFAULT_STATE_FILE})"
    )
    parser.add_argument(
        "--platform-ca-file", help="PEM CA bundle the platform's certificate is checked against"
    )
    parser.add_argument(
        "--secret-dir",
        help=f"folder with files platformUrl, token, platformCA (default {DEFAULT_SECRET_DIR} "
        "when it exists)",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="default info")


def load_agent_settings(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> AgentSettings:
    """The settings from the parsed command line, the environment and the Secret directory."""
    env = os.environ if environ is None else environ

    def flag(name: str) -> str | None:
        value = getattr(args, name, None)
        return value if value not in (None, "") else None

    def from_env(name: str) -> str | None:
        return env.get(ENVIRONMENT[name]) or None

    secret_dir = _secret_dir(flag("secret_dir") or from_env("secret_dir"))

    def secret_file(name: str) -> Path | None:
        if secret_dir is None:
            return None
        path = secret_dir / SECRET_FILES[name]
        return path if path.is_file() else None

    platform_url = flag("platform_url") or from_env("platform_url")
    if platform_url is None and (path := secret_file("platform_url")) is not None:
        platform_url = path.read_text().strip() or None
    if platform_url is None:
        raise ConfigError(
            "the platform's address is required: --platform-url, EDGE_AGENT_PLATFORM_URL or "
            "the file platformUrl of the Secret directory"
        )
    platform_url = check_platform_url(platform_url)

    token_value = flag("token") or from_env("token")
    if token_value is not None:
        join_token = JoinTokenSource(value=token_value)
    else:
        join_token = JoinTokenSource(path=_token_path(secret_dir))

    ca_text = flag("platform_ca_file") or from_env("platform_ca_file")
    platform_ca: Path | None = Path(ca_text).expanduser() if ca_text else None
    if platform_ca is None:
        platform_ca = _non_empty(secret_file("platform_ca_file"))
    if platform_ca is not None and not platform_ca.is_file():
        raise ConfigError(f"the platform CA file {platform_ca} does not exist")

    credential_secret = flag("credential_secret") or from_env("credential_secret")
    credential_secret = credential_secret or DEFAULT_CREDENTIAL_SECRET
    if len(credential_secret) > 253 or not _SECRET_NAME.match(credential_secret):
        raise ConfigError(
            f"--credential-secret {credential_secret!r} is not a valid Secret name "
            "(lower-case letters, digits, '-' and '.')"
        )

    log_level = (flag("log_level") or from_env("log_level") or "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"log level {log_level!r} is not one of {', '.join(LOG_LEVELS)}")

    state_file = flag("state_file") or from_env("state_file") or DEFAULT_STATE_FILE
    return AgentSettings(
        platform_url=platform_url,
        join_token=join_token,
        platform_ca_file=platform_ca,
        kubeconfig=flag("kubeconfig") or from_env("kubeconfig"),
        credential_secret=credential_secret,
        state_file=Path(state_file).expanduser(),
        log_level=log_level,
        namespace=env.get("POD_NAMESPACE") or None,
    )


def _secret_dir(given: str | None) -> Path | None:
    if given is not None:
        path = Path(given).expanduser()
        if not path.is_dir():
            raise ConfigError(f"the Secret directory {path} does not exist")
        return path
    return DEFAULT_SECRET_DIR if DEFAULT_SECRET_DIR.is_dir() else None


def _token_path(secret_dir: Path | None) -> Path | None:
    """The token file of the Secret directory even while it is absent: an operator may add the
    key to the Secret later, and the kubelet then adds the file."""
    return secret_dir / SECRET_FILES["token"] if secret_dir is not None else None


def _non_empty(path: Path | None) -> Path | None:
    # A Secret key set to "" is mounted as an empty file: no CA given.
    if path is None or path.stat().st_size == 0:
        return None
    return path

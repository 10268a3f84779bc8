"""The agent's own cluster's API server, found as every Kubernetes client finds it (the order
of controller-runtime): `--kubeconfig`, then `KUBECONFIG`, then the in-cluster configuration
of a pod (its service account's token, re-read every minute as client-go does: bound tokens
rotate), then ~/.kube/config.

From a kubeconfig, its current context: the server, `certificate-authority(-data)`,
`insecure-skip-tls-verify`, `tls-server-name`, and a bearer `token` / `tokenFile` or a client
certificate and key (`client-certificate(-data)`, `client-key(-data)`). Refused with a message
saying so: exec and auth-provider plugins, basic auth, impersonation and `proxy-url` (the API
server is reached directly, never through the outbound proxy). Client keys are loaded into
memory, never written to a file (app.certs).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml
from yarl import URL

from app.agent.settings import AGENT_VERSION
from app.certs import load_client_certificate
from app.config import ConfigError

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_SECONDS = 60.0  # as client-go's cached token source
CONNECT_TIMEOUT_SECONDS = 10.0
# Calls the agent makes for itself (its credential Secret, /version): bounded as a whole.
# Forwarded calls have no read timeout: a watch stays open as long as the API server keeps it.
OWN_CALL_TIMEOUT = aiohttp.ClientTimeout(total=30.0, sock_connect=CONNECT_TIMEOUT_SECONDS)
VERSION_TIMEOUT = aiohttp.ClientTimeout(total=3.0, sock_connect=3.0)
USER_AGENT = f"edge-agent/{AGENT_VERSION}"


class BearerToken:
    """A bearer token, fixed or read from a file; a file is read again once a minute, and a
    failed read keeps the token read last."""

    def __init__(self, value: str | None = None, path: Path | None = None) -> None:
        self._value = value
        self._path = path
        self._read_at = float("-inf")
        if path is not None:
            self._reread()
            if self._value is None:
                raise ConfigError(f"the token file {path} cannot be read or is empty")

    def value(self) -> str | None:
        if self._path is not None and time.monotonic() - self._read_at >= TOKEN_REREAD_SECONDS:
            self._reread()
        return self._value

    def _reread(self) -> None:
        assert self._path is not None
        try:
            text = self._path.read_text().strip()
        except OSError as exc:
            logger.warning("the token file %s cannot be read: %s", self._path, exc.strerror)
            return
        if text:
            self._value = text
            self._read_at = time.monotonic()

    def __repr__(self) -> str:
        return f"BearerToken({'file ' + str(self._path) if self._path else 'given'})"


@dataclass(frozen=True)
class LocalApiServer:
    """How to reach this cluster's API server."""

    server: str  # scheme://host[:port][/prefix], without a trailing slash
    ssl_context: ssl.SSLContext | None  # None for an http:// server
    tls_server_name: str | None
    token: BearerToken | None
    in_cluster: bool
    namespace: str | None  # the pod's namespace in a cluster, else the context's
    source: str  # said in logs: "in-cluster" or the kubeconfig's path

    def authorization(self) -> str | None:
        token = self.token.value() if self.token is not None else None
        return f"Bearer {token}" if token else None


def load_local_api_server(
    kubeconfig: str | None,
    environ: Mapping[str, str] | None = None,
    *,
    service_account_dir: Path | None = None,
) -> LocalApiServer:
    """The API server this agent serves, by the precedence above."""
    env = os.environ if environ is None else environ
    if kubeconfig:
        return from_kubeconfig([Path(p).expanduser() for p in kubeconfig.split(os.pathsep) if p])
    if env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT"):
        return in_cluster(env, service_account_dir or SERVICE_ACCOUNT_DIR)
    default = Path("~/.kube/config").expanduser()
    if default.is_file():
        return from_kubeconfig([default])
    raise ConfigError(
        "no Kubernetes API server: not running in a pod, and no --kubeconfig, KUBECONFIG or "
        "~/.kube/config"
    )


def in_cluster(env: Mapping[str, str], directory: Path) -> LocalApiServer:
    """A pod's configuration: the API server's service address from the environment, the
    service account's token and the cluster's CA from the mounted service account."""
    host, port = env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"]
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    token_file, ca_file = directory / "token", directory / "ca.crt"
    if not token_file.is_file():
        raise ConfigError(
            f"running in a pod but {token_file} is missing: the agent's service account token "
            "must be mounted (automountServiceAccountToken)"
        )
    try:
        context = ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"the cluster CA {ca_file} cannot be loaded: {exc}") from None
    namespace = env.get("POD_NAMESPACE")
    if not namespace:
        try:
            namespace = (directory / "namespace").read_text().strip() or None
        except OSError:
            namespace = None
    return LocalApiServer(
        server=f"https://{host}:{port}",
        ssl_context=context,
        tls_server_name=None,
        token=BearerToken(path=token_file),
        in_cluster=True,
        namespace=namespace,
        source="in-cluster",
    )


def from_kubeconfig(paths: list[Path]) -> LocalApiServer:
    """The current context of a kubeconfig (several files merged as kubectl does: the first
    to name a context, cluster or user wins, and the first current-context)."""
    documents = []
    for path in paths:
        try:
            loaded = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            if len(paths) == 1:
                raise ConfigError(f"kubeconfig {path} does not exist") from None
            continue  # KUBECONFIG may list files that do not exist
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"kubeconfig {path} cannot be read: {exc}") from None
        if isinstance(loaded, dict):
            documents.append((path, loaded))
    if not documents:
        raise ConfigError(f"no kubeconfig in {os.pathsep.join(map(str, paths))}")
    current = next((d.get("current-context") for _, d in documents if d.get("current-context")), "")
    if not current:
        raise ConfigError("the kubeconfig has no current-context")
    context = _named(documents, "contexts", "context", current)
    cluster = _named(documents, "clusters", "cluster", context[1].get("cluster"))
    user = (
        _named(documents, "users", "user", context[1].get("user"))
        if context[1].get("user")
        else None
    )
    return _server(current, cluster, user, context[1].get("namespace"))


def _named(
    documents: list[tuple[Path, dict[str, Any]]], section: str, key: str, name: Any
) -> tuple[Path, dict[str, Any]]:
    """The entry called `name` of a kubeconfig section, with the file it is in (relative
    paths in it are relative to that file's folder)."""
    for path, document in documents:
        for entry in document.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                found = entry.get(key) or {}
                if not isinstance(found, dict):
                    raise ConfigError(f"kubeconfig {section} entry {name!r} is not a mapping")
                return path, found
    raise ConfigError(f"the kubeconfig has no {key} named {name!r}")


def _server(  # long on purpose: every kubeconfig field the agent accepts or refuses, in order
    context: str,
    cluster: tuple[Path, dict[str, Any]],
    user: tuple[Path, dict[str, Any]] | None,
    namespace: Any,
) -> LocalApiServer:
    cluster_file, cluster_fields = cluster
    server = str(cluster_fields.get("server") or "").rstrip("/")
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(
            f"kubeconfig context {context!r}: server {server!r} is not an http(s) URL"
        )
    if cluster_fields.get("proxy-url"):
        raise ConfigError(
            f"kubeconfig context {context!r}: proxy-url is not supported (the agent reaches its "
            "cluster's API server directly)"
        )
    user_file, user_fields = user if user is not None else (cluster_file, {})
    for plugin in ("exec", "auth-provider"):
        if user_fields.get(plugin):
            raise ConfigError(
                f"kubeconfig context {context!r}: {plugin} credential plugins are not supported; "
                "use a token, a token file or a client certificate"
            )
    if user_fields.get("username") or user_fields.get("password"):
        raise ConfigError(
            f"kubeconfig context {context!r}: basic auth is not supported (Kubernetes removed "
            "it); use a token or a client certificate"
        )
    if user_fields.get("as") or user_fields.get("as-groups") or user_fields.get("as-uid"):
        raise ConfigError(
            f"kubeconfig context {context!r}: impersonation (as, as-groups) is not supported"
        )
    token: BearerToken | None = None
    if user_fields.get("token"):
        token = BearerToken(value=str(user_fields["token"]).strip())
    elif user_fields.get("tokenFile"):
        token = BearerToken(path=_relative(user_file, str(user_fields["tokenFile"])))
    certificate = _pem(user_file, user_fields, "client-certificate")
    key = _pem(user_file, user_fields, "client-key")
    if (certificate is None) != (key is None):
        raise ConfigError(
            f"kubeconfig context {context!r}: a client certificate needs its key and a key its "
            "certificate"
        )
    context_ssl: ssl.SSLContext | None = None
    if parts.scheme == "https":
        authority = _pem(cluster_file, cluster_fields, "certificate-authority")
        try:
            context_ssl = ssl.create_default_context(
                cadata=authority.decode() if authority else None
            )
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"kubeconfig context {context!r}: the CA is not valid: {exc}"
            ) from None
        if certificate is not None and key is not None:
            try:
                load_client_certificate(context_ssl, certificate, key)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"kubeconfig context {context!r}: the client certificate or key is not "
                    f"valid: {exc}"
                ) from None
        # Only a boolean true turns verification off, as in client-go.
        if cluster_fields.get("insecure-skip-tls-verify") is True:
            logger.warning(
                "kubeconfig context %s: insecure-skip-tls-verify: the API server's certificate "
                "is not checked",
                context,
            )
            context_ssl.check_hostname = False
            context_ssl.verify_mode = ssl.CERT_NONE
    elif certificate is not None:
        raise ConfigError(f"kubeconfig context {context!r}: a client certificate needs https")
    if token is None and certificate is None:
        logger.warning("kubeconfig context %s has no credentials: requests are anonymous", context)
    tls_server_name = cluster_fields.get("tls-server-name")
    return LocalApiServer(
        server=server,
        ssl_context=context_ssl,
        tls_server_name=str(tls_server_name) if tls_server_name else None,
        token=token,
        in_cluster=False,
        namespace=str(namespace) if namespace else None,
        source=str(cluster_file),
    )


def _relative(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base.parent / path


def _pem(base: Path, fields: dict[str, Any], name: str) -> bytes | None:
    """A PEM value given inline (`<name>-data`, base64) or as a file (`<name>`)."""
    data = fields.get(f"{name}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"kubeconfig {name}-data is not base64") from None
    path = fields.get(name)
    if path:
        file = _relative(base, str(path))
        try:
            return file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"kubeconfig {name} {file} cannot be read: {exc.strerror}") from None
    return None


class LocalApiClient:
    """One HTTP session to the local API server, for the forwarded exchanges and for the
    agent's own calls. Never through a proxy from the environment (in-cluster traffic must not
    leave through the site's outbound proxy), redirects never followed, answers passed on as
    the API server encoded them."""

    def __init__(self, api: LocalApiServer) -> None:
        self.api = api
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LocalApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                # No pool limit: the tunnel caps the exchanges open at once (MAX_STREAMS), and
                # each watch holds a connection of its own for as long as it lasts.
                connector=aiohttp.TCPConnector(limit=0, ssl=self.api.ssl_context or False),
                trust_env=False,
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=None
                ),
            )
        return self._session

    def url(self, path: str, query: str = "") -> URL:
        """`path` and `query` as given (checked by the caller: only URL characters), not
        re-encoded."""
        return URL(f"{self.api.server}{path}{'?' + query if query else ''}", encoded=True)

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        authorization = self.api.authorization()
        if authorization:
            headers["Authorization"] = authorization
        return headers

    async def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """One call of the agent's own: (status, the answer's JSON or None)."""
        headers = self.headers({"Accept": "application/json", "User-Agent": USER_AGENT})
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with self.session.request(
            method,
            self.url(path),
            headers=headers,
            data=data,
            allow_redirects=False,
            timeout=OWN_CALL_TIMEOUT,
            server_hostname=self.api.tls_server_name,
        ) as response:
            raw = await response.read()
            try:
                document = json.loads(raw) if raw else None
            except ValueError:
                document = None
            return response.status, document

    async def git_version(self) -> str | None:
        """The cluster's Kubernetes version (`/version` gitVersion), or None when it cannot be
        read quickly: the HELLO that carries it is not held up."""
        try:
            async with self.session.get(
                self.url("/version"),
                headers=self.headers({"Accept": "application/json", "User-Agent": USER_AGENT}),
                allow_redirects=False,
                timeout=VERSION_TIMEOUT,
                server_hostname=self.api.tls_server_name,
            ) as response:
                if response.status != 200:
                    return None
                document = json.loads(await response.read())
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return None
        version = document.get("gitVersion") if isinstance(document, dict) else None
        if not isinstance(version, str):
            return None
        return "".join(c for c in version if c.isprintable())[:64] or None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

"""Kubeconfig validation. A kubeconfig is the most sensitive thing the platform holds: it is
checked here, reduced to the one context used, encrypted, and never returned or logged.

Error messages name what is wrong, never a value from the kubeconfig.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import yaml

from app.clusters.address_guard import EndpointRefused, check_server_url
from app.kit.body import NoAliasLoader

MAX_KUBECONFIG_BYTES = 512 * 1024

# Credential fields that point at files on the management plane: never read them.
FILE_FIELDS = ("client-certificate", "client-key", "tokenFile", "token-file")


class InvalidKubeconfig(ValueError):
    pass


@dataclass(frozen=True)
class Kubeconfig:
    server: str
    host: str
    port: int
    auth: str  # client-certificate | token | basic
    document: dict[str, Any]  # the reduced kubeconfig: one cluster, one user, one context

    def to_yaml(self) -> bytes:
        return yaml.safe_dump(self.document, sort_keys=False).encode()


def _decode(value: str) -> dict[str, Any]:
    if len(value.encode()) > MAX_KUBECONFIG_BYTES:
        raise InvalidKubeconfig(f"kubeconfig is larger than {MAX_KUBECONFIG_BYTES // 1024} KiB")
    text = value
    stripped = "".join(value.split())
    if stripped and ":" not in value:
        try:
            text = base64.b64decode(stripped, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):  # binascii.Error, and non-ASCII input
            raise InvalidKubeconfig("kubeconfig is neither YAML nor base64-encoded YAML") from None
    try:
        document = yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 - safe loader subclass
    except yaml.YAMLError:
        raise InvalidKubeconfig("kubeconfig is not valid YAML") from None
    if not isinstance(document, dict):
        raise InvalidKubeconfig("kubeconfig must be a YAML mapping (kind: Config)")
    return document


def _named(document: dict[str, Any], section: str, name: str, key: str) -> dict[str, Any]:
    entries = document.get(section)
    if not isinstance(entries, list):
        raise InvalidKubeconfig(f"kubeconfig has no {section} list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            body = entry.get(key)
            if not isinstance(body, dict):
                raise InvalidKubeconfig(f"{section} entry {name!r} has no {key} mapping")
            return body
    raise InvalidKubeconfig(f"kubeconfig names {key} {name!r} but has no such {section} entry")


def _check_user(user: dict[str, Any]) -> str:
    if "exec" in user:
        raise InvalidKubeconfig(
            "exec credential plugins are not accepted: they would run commands on the "
            "management plane; use a client certificate, a token or basic auth"
        )
    if "auth-provider" in user:
        raise InvalidKubeconfig(
            "auth-provider plugins are not accepted; use a client certificate, a token or "
            "basic auth"
        )
    for field in FILE_FIELDS:
        if field in user:
            raise InvalidKubeconfig(
                f"user.{field} refers to a file; embed the credential (…-data fields) instead"
            )
    if user.get("client-certificate-data") and user.get("client-key-data"):
        return "client-certificate"
    if user.get("token"):
        return "token"
    if user.get("username") and user.get("password"):
        return "basic"
    raise InvalidKubeconfig(
        "the user of the current context has no credentials (client-certificate-data and "
        "client-key-data, token, or username and password)"
    )


def parse_kubeconfig(value: str, *, allow_private: bool, allow_insecure: bool) -> Kubeconfig:
    document = _decode(value)
    current = document.get("current-context")
    if not isinstance(current, str) or not current:
        raise InvalidKubeconfig("kubeconfig has no current-context")
    context = _named(document, "contexts", current, "context")
    cluster_name, user_name = context.get("cluster"), context.get("user")
    if not isinstance(cluster_name, str) or not isinstance(user_name, str):
        raise InvalidKubeconfig(f"context {current!r} must name a cluster and a user")
    cluster = _named(document, "clusters", cluster_name, "cluster")
    user = _named(document, "users", user_name, "user")
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise InvalidKubeconfig(f"cluster {cluster_name!r} has no server URL")
    if "proxy-url" in cluster:
        raise InvalidKubeconfig(
            "cluster.proxy-url is not accepted: the platform connects to the API server directly"
        )
    if "certificate-authority" in cluster:
        raise InvalidKubeconfig(
            "cluster.certificate-authority refers to a file; use certificate-authority-data"
        )
    try:
        host, port = check_server_url(
            server, allow_private=allow_private, allow_insecure=allow_insecure
        )
    except EndpointRefused as exc:
        raise InvalidKubeconfig(str(exc)) from None
    auth = _check_user(user)
    reduced = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": current, "context": {"cluster": cluster_name, "user": user_name}}],
        "current-context": current,
    }
    return Kubeconfig(server, host, port, auth, reduced)

"""All Kubernetes I/O goes through here: the calls to an edge cluster's API, the bounds on them
and what their answers mean. The clients they are made with, one per edge cluster, are built
and cached by `kube_clients.KubeClients`.

Whoever answers at a cluster's address is not trusted: the address is checked against the SSRF
policy on each connection (a literal one when the client is built), redirects are not followed,
answers are bounded in size and time, only a Kubernetes Status message of theirs is repeated
(cleaned and short), and the kubeconfig's credentials are loaded into memory, never written to
a file."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import hashlib
import http
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio.client import ApiClient

from app import __version__
from app.clusters.address_guard import EndpointRefused
from app.models.clusters import Cluster

REQUEST_TIMEOUT = (5.0, 10.0)  # (connect, read) seconds for every call to an edge cluster
# The read timeout bounds each wait for data, not the call: a server sending a byte every few
# seconds would hold a call (and its probe or dispatch slot) forever. A call takes a few
# hundred milliseconds; the largest answer (MAX_ANSWER_BYTES) needs 0.5 MiB/s to come in time.
CALL_TOTAL_SECONDS = 30.0
CALL_TIMEOUT = aiohttp.ClientTimeout(
    total=CALL_TOTAL_SECONDS,
    connect=REQUEST_TIMEOUT[0],
    sock_connect=REQUEST_TIMEOUT[0],
    sock_read=REQUEST_TIMEOUT[1],
)
# The most of one answer read, once decompressed: past it the call fails and the connection is
# dropped. One object is at most etcd's 1.5 MiB request limit; the largest answer asked for is
# the node list a probe reads, 5 to 30 KiB a node (its image list is most of it): 16 MiB holds
# several hundred nodes, more than an edge cluster has, and bounds what one call can hold.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
# How much of the edge's own words (a Status message) an error repeats, and of the text of an
# exception (a connection or TLS failure, described by aiohttp or ssl, not by the edge).
MAX_MESSAGE_CHARS = 200
MAX_EXCEPTION_CHARS = 300
# Each managed cluster keeps one connection open between probes, so that neither its probes
# nor a rollout pay for a TLS handshake (a third of a probe's CPU, a fifth of a target's with
# 1,000 clusters). Idle connections are closed after twice the probe interval, at most
# IDLE_CONNECTION_MAX_SECONDS: proxies, load balancers and API servers commonly close idle
# connections after 60 to 90 s, and a request sent down one being closed fails.
IDLE_CONNECTION_MAX_SECONDS = 45.0
# asyncio gives every TLS connection a read buffer of this size (256 KiB by default), filled
# with zeros up front and kept while the connection is: the controller keeps one per edge. It
# bounds only how much one read of the socket takes: 16 KiB (about one TLS record) took a kept
# connection from 89 to 73 KiB, and cost no CPU on small answers and 10-20 % more on a 900 kB
# one than 32 KiB (8 KiB: 65 KiB, but 75 % more CPU on the large answer).
TLS_READ_BUFFER_BYTES = 16 * 1024
READ_BUFSIZE = 2**21  # aiohttp's read buffer, as the Kubernetes client sets it (etcd's 1.5 MiB)
# As client-go names its callers (kubectl/v1.30.2): the edge's audit log shows who wrote.
USER_AGENT = f"edge-platform-controller/{__version__}"


def keepalive_for(probe_interval: float) -> float:
    """How long a connection to an edge is kept idle: past its next probe, within bounds."""
    return min(IDLE_CONNECTION_MAX_SECONDS, 2 * probe_interval)


def small_tls_read_buffers() -> None:
    """Make asyncio's TLS connections in this process allocate TLS_READ_BUFFER_BYTES to read
    into, not 256 KiB each (`max_size` is the size SSLProtocol allocates and reads with)."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER_BYTES


@dataclass(frozen=True)
class ClusterTarget:
    """What the controller needs to reach one cluster (read from its row): its kubeconfig,
    or, for a cluster behind NAT, only that it is reached through its agent's tunnel."""

    id: int
    uid: str
    name: str
    key_id: str | None
    ciphertext: bytes | None
    agent: bool = False

    @classmethod
    def of(cls, row: Cluster) -> ClusterTarget:
        agent = row.connection_type == "agent"
        if agent:
            return cls(row.id, str(row.uid), row.name, None, None, agent=True)
        return cls(row.id, str(row.uid), row.name, row.kubeconfig_key_id, row.kubeconfig_ciphertext)

    @property
    def fingerprint(self) -> str:
        """Changes when the way to the cluster does (a client is then built anew)."""
        if self.agent:
            return "agent"
        return hashlib.sha256(self.ciphertext or b"").hexdigest()


def reachable(row: Cluster) -> str | None:
    """Why the controller cannot reach the cluster at all (None: it can try)."""
    if row.connection_type == "agent":
        return None if row.agent_credential_hash is not None else "has not joined yet"
    return None if row.kubeconfig_ciphertext is not None else "has no kubeconfig"


# Objects at the edge --------------------------------------------------------------------------

FIELD_MANAGER = "edge-platform"
# Where each kind the platform writes lives in the Kubernetes API: (plural, namespaced).
KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("helm.cattle.io/v1", "HelmChart"): ("helmcharts", True),
    ("batch/v1", "Job"): ("jobs", True),
}
# Answers that will not change by asking again: the object or the request is wrong.
# 409 is not here: at the edge it means another writer got there first ("the object has been
# modified"), which passes when asked again, as client-go's RetryOnConflict assumes.
PERMANENT_STATUSES = frozenset({400, 403, 404, 405, 415, 422})


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjectRef:
        meta = obj["metadata"]
        return cls(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
        }

    def path(self) -> str:
        plural, namespaced = KINDS[(self.api_version, self.kind)]
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        where = f"/namespaces/{self.namespace}" if namespaced else ""
        return f"{root}{where}/{plural}/{self.name}"

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


class EdgeError(Exception):
    """A call to an edge cluster failed. `permanent`: asking again will not help (the edge
    refused the object); otherwise (timeouts, connection errors, 429, 5xx) retry later."""

    def __init__(self, message: str, *, permanent: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


def _cleaned(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Text as it may be shown: printable, on one line, at most `limit` characters (control
    and format characters, such as terminal escapes or right-to-left overrides, become
    spaces)."""
    printable = "".join(c if c.isprintable() else " " for c in text)
    words = " ".join(printable.split())
    if len(words) > limit:
        words = words[: limit - 1] + "…"
    return words


def _status_message(answer: bytes | bytearray) -> str | None:
    """The message of a Kubernetes Status object, when that is what `answer` is."""
    try:
        document = json.loads(answer)
    except ValueError:
        return None
    if not isinstance(document, dict) or document.get("kind") != "Status":
        return None
    message = document.get("message")
    if not isinstance(message, str):
        return None
    return _cleaned(message) or None


def _refusal(what: str, status: int, answer: bytes | bytearray) -> EdgeError:
    """The edge answered other than 2xx: what it said, and whether asking again helps. Only a
    Kubernetes Status message is repeated: whatever else answered at the address (a redirect
    to an internal service, an error page) is not passed on to the operator."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "(unknown status)"
    if 300 <= status <= 399:
        # An API server does not redirect: the address is wrong (or points elsewhere on
        # purpose). Not permanent: the object is fine, and correcting the address fixes it.
        return EdgeError(
            f"{what}: {status} {phrase}: the API server answered with a redirect, which is "
            "not followed; check the cluster's address",
            permanent=False,
            status=status,
        )
    message = _status_message(answer)
    # A namespace being terminated refuses new objects for a while (403): that passes.
    passing = status == 403 and message is not None and "being terminated" in message
    shown = message or f"{phrase} (the answer is not a Kubernetes Status)"
    return EdgeError(
        f"{what}: {status} {shown}",
        permanent=status in PERMANENT_STATUSES and not passing,
        status=status,
    )


async def _read_answer(response: aiohttp.ClientResponse, what: str) -> bytearray:
    """The answer's body, refused past MAX_ANSWER_BYTES: at once when its declared length is
    larger, otherwise as soon as that much has come in (the length may not be declared, and
    counts the compressed bytes when it is compressed)."""
    too_large = EdgeError(
        f"{what}: the answer is larger than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB",
        permanent=False,
    )
    declared = response.content_length
    if declared is not None and declared > MAX_ANSWER_BYTES:
        raise too_large
    answer = bytearray()
    async for chunk in response.content.iter_any():
        answer += chunk
        if len(answer) > MAX_ANSWER_BYTES:
            raise too_large
    return answer  # not copied into bytes: json.loads reads a bytearray as well


def _failure(what: str, exc: Exception) -> EdgeError:
    """A call that got no usable answer, said briefly, without what the other end sent."""
    if isinstance(exc, EndpointRefused):
        return EdgeError(f"{what}: refused: {exc}", permanent=False)
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        # aiohttp quotes the offending bytes (an SSH or SMTP greeting, say) in these.
        return EdgeError(f"{what}: the answer is not valid HTTP", permanent=False)
    if isinstance(exc, TimeoutError) and not str(exc):
        total = CALL_TIMEOUT.total
        within = f" within {total:g} s" if total else ""
        return EdgeError(f"{what}: TimeoutError: no complete answer{within}", permanent=False)
    described = _cleaned(str(exc), MAX_EXCEPTION_CHARS)
    return EdgeError(f"{what}: {type(exc).__name__}: {described}", permanent=False)


async def _call(
    api: ApiClient,
    method: str,
    path: str,
    what: str,
    *,
    query: list[tuple[str, str]] | None = None,
    body: dict[str, Any] | None = None,
    content_type: str = "application/json",
) -> Any:
    """One request to the cluster's API, its answer decoded from JSON; any failure raises
    EdgeError saying `what` failed. The client's configuration gives the address, the
    credentials and the TLS server name; the request goes out on its session directly, not
    through `call_api`, which walks every object sent and received to convert model classes
    the platform does not use. Redirects are not followed: where one leads is not checked."""
    try:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        await api.update_params_for_auth(headers, [], ["BearerToken"])
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        rest = api.rest_client
        async with rest.pool_manager.request(
            method,
            f"{api.configuration.host}{path}",
            params=query,
            data=data,
            headers=headers,
            timeout=CALL_TIMEOUT,
            server_hostname=rest.server_hostname,
            allow_redirects=False,
        ) as response:
            status = response.status
            redirected = 300 <= status <= 399
            answer = bytearray() if redirected else await _read_answer(response, what)
        if not 200 <= status <= 299:
            raise _refusal(what, status, answer)
        return json.loads(answer) if answer else None
    except EdgeError:
        raise
    except Exception as exc:  # refused address, connection refused or reset, timeouts, TLS
        raise _failure(what, exc) from exc


async def get_json(api: ApiClient, path: str) -> Any:
    """GET a path of the cluster's API as decoded JSON (no model objects built)."""
    return await _call(api, "GET", path, f"GET {path}")


async def apply_object(api: ApiClient, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply with the platform's field manager (force: the platform owns them);
    the answer is the object as the edge stored it."""
    ref = ObjectRef.of(obj)
    result: dict[str, Any] = await _call(
        api,
        "PATCH",
        ref.path(),
        f"apply {ref}",
        query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        # JSON is YAML: the API server takes an apply patch in either.
        content_type="application/apply-patch+yaml",
        body=obj,
    )
    return result


async def read_object(api: ApiClient, ref: ObjectRef) -> dict[str, Any] | None:
    """The object as the edge has it, or None when it does not exist."""
    try:
        result: dict[str, Any] = await _call(api, "GET", ref.path(), f"read {ref}")
    except EdgeError as exc:
        if exc.status == 404:
            return None
        raise
    return result


async def delete_object(api: ApiClient, ref: ObjectRef) -> None:
    """Delete it (background propagation); already gone counts as done."""
    try:
        await _call(
            api,
            "DELETE",
            ref.path(),
            f"delete {ref}",
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )
    except EdgeError as exc:
        if exc.status != 404:
            raise

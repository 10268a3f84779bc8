"""The agent's side of its own cluster: found as a pod finds it (service account token and CA,
over TLS) with the credential kept in a Secret there, or from a kubeconfig (client
certificates, tls-server-name); and the kubeconfigs it refuses, saying why."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from app.agent import kubeapi
from app.agent.kubeapi import LocalApiClient, load_local_api_server
from app.agent.settings import AgentSettings, JoinTokenSource
from app.agent.store import FileCredentialStore, SecretCredentialStore, StoredCredential, StoreError
from app.config import ConfigError
from tests.agent.support import Pki, TestPlatform, TlsKubernetes, running

NAMESPACE = "edge-agent"


@pytest.fixture
def pki() -> Pki:
    return Pki()


@pytest.fixture
async def apiserver(pki: Pki, tmp_path: Path) -> AsyncIterator[TlsKubernetes]:
    server = await TlsKubernetes(pki, tmp_path, server_names=["127.0.0.1"]).start()
    yield server
    await server.stop()


@pytest.fixture
def service_account(
    tmp_path: Path, pki: Pki, apiserver: TlsKubernetes, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A pod's view: the service's address in the environment, the service account's token,
    CA and namespace mounted (here, in a folder of the test's)."""
    folder = tmp_path / "serviceaccount"
    folder.mkdir()
    (folder / "token").write_text("sa-token-1\n")
    (folder / "ca.crt").write_bytes(pki.ca_pem)
    (folder / "namespace").write_text(NAMESPACE)
    monkeypatch.setattr(kubeapi, "SERVICE_ACCOUNT_DIR", folder)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(apiserver.port))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    return folder


def secret_fields(apiserver: TlsKubernetes, name: str) -> dict[str, str]:
    secret = apiserver.secret(NAMESPACE, name)
    assert secret is not None, f"no Secret {NAMESPACE}/{name}"
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


async def test_in_a_pod_the_credential_is_kept_in_a_secret_and_the_token_reread(
    service_account: Path,
    apiserver: TlsKubernetes,
    platform: TestPlatform,
    settings_for: Callable[..., AgentSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = platform.issue_token("edge-1")
    settings = settings_for(
        kubeconfig=None, join_token=JoinTokenSource(value=token), credential_secret="edge-cred"
    )
    async with running(settings):
        connection = await platform.next_connection()
        assert connection.hello.result()["kubernetesVersion"] == "v1.31.4"
        fields = secret_fields(apiserver, "edge-cred")
        assert fields["credential"] == connection.credential
        assert fields["cluster"] == "edge-1"
        assert fields["joinTokenDigest"] == hashlib.sha256(token.encode()).hexdigest()
        assert datetime.fromisoformat(fields["issuedAt"]) <= datetime.now(UTC)
        answer = await connection.request("GET", "/version")
        assert answer.status == 200
        assert answer.json()["gitVersion"] == "v1.31.4"
        assert set(apiserver.authorizations) == {"Bearer sa-token-1"}

        # The kubelet rotates the bound token; the agent reads it again (every minute; now).
        (service_account / "token").write_text("sa-token-2\n")
        monkeypatch.setattr(kubeapi, "TOKEN_REREAD_SECONDS", 0.0)
        assert (await connection.request("GET", "/version")).status == 200
        assert apiserver.authorizations[-1] == "Bearer sa-token-2"
    assert not settings.state_file.exists()  # in a pod, nothing on the container's disk

    # Restarted: the credential comes from the Secret; the spent token is not used again.
    async with running(settings):
        again = await platform.next_connection()
        assert again.credential == connection.credential
        assert len(platform.joins) == 1


async def test_the_secret_store_creates_then_patches_and_says_what_failed(
    service_account: Path, apiserver: TlsKubernetes
) -> None:
    api = load_local_api_server(None)
    assert api.in_cluster
    assert api.namespace == NAMESPACE
    async with LocalApiClient(api) as local:
        store = SecretCredentialStore(local, NAMESPACE, "edge-agent-credential")
        assert await store.load() is None
        first = StoredCredential("c1", "edge-1", datetime(2026, 1, 1, tzinfo=UTC), 600, "d1")
        await store.save(first)
        assert await store.load() == first
        second = StoredCredential("c2", "edge-1", datetime(2026, 1, 2, tzinfo=UTC), 900, "d1")
        await store.save(second)
        assert await store.load() == second
        assert secret_fields(apiserver, "edge-agent-credential")["credential"] == "c2"
        secret = apiserver.secret(NAMESPACE, "edge-agent-credential")
        assert secret is not None
        assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "edge-agent"}

        # An API server that refuses (RBAC) is said, not taken for "no credential".
        forbidden = {"kind": "Status", "code": 403, "message": "secrets is forbidden"}
        apiserver.k["get", "/api/v1/namespaces/edge-agent/secrets/forbidden"] << 403 << forbidden
        refused = SecretCredentialStore(local, NAMESPACE, "forbidden")
        with pytest.raises(
            StoreError, match=r"HTTP 403: secrets is forbidden \(does the agent's Role"
        ):
            await refused.load()


async def test_the_state_file_is_replaced_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "config" / "edge-agent" / "credential.json"
    store = FileCredentialStore(path)
    assert await store.load() is None
    first = StoredCredential("c1", "edge-1", datetime(2026, 1, 1, tzinfo=UTC), 600, "d1")
    await store.save(first)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    await store.save(first)
    assert await store.load() == first
    assert [p.name for p in path.parent.iterdir()] == ["credential.json"]  # no leftovers
    path.write_text("{not json")
    with pytest.raises(StoreError, match="remove it to join again"):
        await store.load()


async def test_a_kubeconfig_with_a_client_certificate_and_a_tls_server_name(
    pki: Pki, tmp_path: Path
) -> None:
    server = TlsKubernetes(pki, tmp_path, server_names=["api.edge.test"], client_certificates=True)
    await server.start()
    try:
        certificate, key = pki.issue("edge-operator")
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "edge",
                    "contexts": [{"name": "edge", "context": {"cluster": "c", "user": "u"}}],
                    "clusters": [
                        {
                            "name": "c",
                            "cluster": {
                                "server": f"https://127.0.0.1:{server.port}",
                                "certificate-authority-data": base64.b64encode(pki.ca_pem).decode(),
                                "tls-server-name": "api.edge.test",
                            },
                        }
                    ],
                    "users": [
                        {
                            "name": "u",
                            "user": {
                                "client-certificate-data": base64.b64encode(certificate).decode(),
                                "client-key-data": base64.b64encode(key).decode(),
                            },
                        }
                    ],
                }
            )
        )
        api = load_local_api_server(str(kubeconfig), {})
        assert not api.in_cluster
        async with LocalApiClient(api) as local:
            assert await local.git_version() == "v1.31.4"
        assert server.authorizations == [None]  # the certificate, no token
        assert "edge-operator" in server.client_subjects[0]
    finally:
        await server.stop()


def kubeconfig_with(
    tmp_path: Path, user: dict[str, object], cluster: dict[str, object] | None = None
) -> str:
    path = tmp_path / "refused.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "current-context": "edge",
                "contexts": [{"name": "edge", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [
                    {"name": "c", "cluster": cluster or {"server": "https://10.0.0.1:6443"}}
                ],
                "users": [{"name": "u", "user": user}],
            }
        )
    )
    return str(path)


@pytest.mark.parametrize(
    ("user", "cluster", "said"),
    [
        (
            {"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}},
            None,
            "exec credential plugins are not supported",
        ),
        ({"auth-provider": {"name": "gcp"}}, None, "auth-provider credential plugins"),
        ({"username": "admin", "password": "pw"}, None, "basic auth is not supported"),
        ({"token": "t", "as": "system:admin"}, None, "impersonation"),
        (
            {"token": "t"},
            {"server": "https://10.0.0.1:6443", "proxy-url": "http://proxy:3128"},
            "proxy-url is not supported",
        ),
        ({"token": "t"}, {"server": "ftp://10.0.0.1"}, "is not an http(s) URL"),
        ({"client-certificate-data": "bm90IGEgY2VydA=="}, None, "needs its key"),
    ],
)
def test_kubeconfigs_the_agent_refuses(
    tmp_path: Path, user: dict[str, object], cluster: dict[str, object] | None, said: str
) -> None:
    with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")):
        load_local_api_server(kubeconfig_with(tmp_path, user, cluster), {})


def test_without_a_pod_or_kubeconfig_the_agent_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="not running in a pod, and no --kubeconfig"):
        load_local_api_server(None, {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_local_api_server(str(tmp_path / "absent"), {})


def test_a_token_file_that_disappears_keeps_the_last_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first")
    path = kubeconfig_with(
        tmp_path, {"tokenFile": str(token_file)}, {"server": "http://127.0.0.1:1"}
    )
    api = load_local_api_server(path, {})
    assert api.authorization() == "Bearer first"
    monkeypatch.setattr(kubeapi, "TOKEN_REREAD_SECONDS", 0.0)
    token_file.write_text("second")
    assert api.authorization() == "Bearer second"
    token_file.unlink()
    assert api.authorization() == "Bearer second"

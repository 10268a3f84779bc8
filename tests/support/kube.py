"""Cluster targets for the controller's Kubernetes clients, sealed with a test key."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import yaml

from app.controller.kube import ClusterTarget
from app.crypto import SecretBox

SECRETS = SecretBox("kube-client-test-key-0123456789abcdef")


def target(server: str, *, ca: bytes | None = None, cluster_id: int = 1) -> ClusterTarget:
    where: dict[str, Any] = {"server": server}
    if ca is not None:
        where["certificate-authority-data"] = base64.b64encode(ca).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "edge",
        "clusters": [{"name": "edge", "cluster": where}],
        "users": [{"name": "ops", "user": {"token": "edge-test-token"}}],
        "contexts": [{"name": "edge", "context": {"cluster": "edge", "user": "ops"}}],
    }
    uid = str(uuid.uuid4())
    sealed = SECRETS.seal(yaml.safe_dump(config).encode(), bound_to=f"cluster:{uid}")
    return ClusterTarget(cluster_id, uid, f"edge-{cluster_id}", sealed.key_id, sealed.ciphertext)

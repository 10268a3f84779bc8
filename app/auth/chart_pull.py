"""Read-only chart repository credentials for edge clusters.

A Helm version is installed at the edge by the helm-controller of k3s/RKE2, which downloads the
chart from this platform's `/chartrepo`. That needs credentials: each workspace gets a basic-auth
pair derived from ENCRYPTION_KEY (nothing is stored; it changes when the key rotates, and the
dispatcher then re-applies the Secret that carries it, as drift). It can only read charts.
"""

from __future__ import annotations

from app.crypto import SecretBox

USERNAME_PREFIX = "chartpull."


def _purpose(workspace: str) -> str:
    return f"chartrepo-pull:{workspace}"


def pull_credentials(secrets: SecretBox, workspace: str) -> tuple[str, str]:
    return f"{USERNAME_PREFIX}{workspace}", secrets.token_for(_purpose(workspace))


def pull_workspace(secrets: SecretBox, username: str, password: str) -> str | None:
    """The workspace a valid pull credential was made for, else None."""
    if not username.startswith(USERNAME_PREFIX):
        return None
    workspace = username.removeprefix(USERNAME_PREFIX)
    return workspace if secrets.verify_token(_purpose(workspace), password) else None

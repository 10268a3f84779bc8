"""Secrets at rest: AES-GCM with key ids, rotation, and ciphertexts bound to their object."""

from __future__ import annotations

import asyncpg
import httpx
import pytest
import yaml
from fastapi import FastAPI

from app.crypto import DecryptionError, Sealed, SecretBox
from tests.support.clusters import TOKEN_VALUE, cluster_body
from tests.support.platform import ENCRYPTION_KEY
from tests.support.processes import clean_env, run_cli


def test_seal_and_open() -> None:
    box = SecretBox("k" * 40)
    sealed = box.seal(b"kubeconfig", "cluster:1")
    assert b"kubeconfig" not in sealed.ciphertext
    assert box.open(sealed, "cluster:1") == b"kubeconfig"
    assert box.seal(b"kubeconfig", "cluster:1").ciphertext != sealed.ciphertext  # fresh nonce


def test_a_ciphertext_moved_to_another_object_or_tampered_does_not_open() -> None:
    box = SecretBox("k" * 40)
    sealed = box.seal(b"secret", "cluster:1")
    with pytest.raises(DecryptionError):
        box.open(sealed, "cluster:2")
    flipped = bytes([sealed.ciphertext[-1] ^ 1])
    tampered = type(sealed)(sealed.key_id, sealed.ciphertext[:-1] + flipped)
    with pytest.raises(DecryptionError):
        box.open(tampered, "cluster:1")


def test_rotation_keeps_old_ciphertexts_readable() -> None:
    old = SecretBox("old-key-" * 5)
    sealed = old.seal(b"secret", "x")
    new = SecretBox("new-key-" * 5, previous=["old-key-" * 5])
    assert new.needs_rotation(sealed)
    assert new.open(sealed, "x") == b"secret"
    assert not new.needs_rotation(new.seal(b"secret", "x"))
    with pytest.raises(DecryptionError, match="no key"):
        SecretBox("new-key-" * 5).open(sealed, "x")


@pytest.mark.slow
async def test_rotate_key_command(
    app_client: tuple[FastAPI, httpx.AsyncClient], database_url: str
) -> None:
    _, client = app_client
    await client.post("/api/v1/regions", json={"metadata": {"name": "east-china"}})
    created = await client.post("/api/v1/clusters", json=cluster_body("c1", "east-china"))
    uid = created.json()["metadata"]["uid"]
    await client.post(
        "/api/v1/workspaces", json={"metadata": {"name": "w"}, "spec": {"clusters": ["c1"]}}
    )
    config = {"metadata": {"name": "creds"}, "spec": {"secret": True, "data": {"k": "v-secret"},
              "targets": [{"clusters": ["c1"]}]}}  # fmt: skip
    assert (await client.post("/api/v1/workspaces/w/configsyncs", json=config)).status_code == 201
    new_key = "rotated-encryption-key-0123456789-abcdef"
    env = clean_env(
        DATABASE_URL=database_url,
        ENCRYPTION_KEY=new_key,
        ENCRYPTION_KEYS_PREVIOUS=ENCRYPTION_KEY,
    )
    result = run_cli("rotate-key", env=env)
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 1 kubeconfig(s) and 2 secret configuration(s)" in result.stdout
    assert run_cli("rotate-key", env=env).stdout.startswith("re-encrypted 0")

    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT kubeconfig_key_id, kubeconfig_ciphertext FROM clusters WHERE name = 'c1'"
        )
        key_ids = await conn.fetch(
            "SELECT content->>'keyId' AS k FROM rollouts UNION ALL "
            "SELECT content->>'keyId' FROM rollout_revisions"
        )
    finally:
        await conn.close()
    assert {r["k"] for r in key_ids} == {SecretBox(new_key).current_id}
    sealed = Sealed(row["kubeconfig_key_id"], row["kubeconfig_ciphertext"])
    plain = SecretBox(new_key).open(sealed, f"cluster:{uid}")  # the old key is no longer needed
    assert yaml.safe_load(plain)["users"][0]["user"]["token"] == TOKEN_VALUE


def test_derived_tokens_verify_across_a_rotation_and_only_for_their_purpose() -> None:
    from app.crypto import SecretBox

    old = SecretBox("old-key-that-is-long-enough-0123456789")
    token = old.token_for("chartrepo-pull:team-a")
    rotated = SecretBox(
        "new-key-that-is-long-enough-0123456789", ["old-key-that-is-long-enough-0123456789"]
    )
    assert rotated.verify_token("chartrepo-pull:team-a", token)
    assert rotated.token_for("chartrepo-pull:team-a") != token  # new ones use the new key
    assert not rotated.verify_token("chartrepo-pull:team-b", token)
    flipped = token[:-1] + ("1" if token.endswith("0") else "0")
    assert not rotated.verify_token("chartrepo-pull:team-a", flipped)
    forgotten = SecretBox("new-key-that-is-long-enough-0123456789")
    assert not forgotten.verify_token("chartrepo-pull:team-a", token)

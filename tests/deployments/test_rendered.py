"""Documents kept encoded per change (app/deployments/rendered.py): an unchanged row is served
the bytes kept for it, a changed one never is, and the cache keeps to its byte budget."""

from __future__ import annotations

import json
from collections import namedtuple
from typing import Any

import pydantic_core

from app.deployments.rendered import RenderedDocuments
from app.deployments.status import deployment_document

Row = namedtuple(
    "Row",
    "id name uid resource_version generation created deleted application_version namespace "
    "paused revision stored",
)


def row(rollout_id: int = 1, phase: str = "Ready", message: str = "ready") -> Any:
    target = {
        "cluster": "edge-1", "region": "r1", "nodeGroup": None, "phase": phase,
        "desiredReplicas": None, "readyReplicas": 1, "revision": 1, "message": message,
        "lastTransitionTime": "2026-12-05T08:00:00Z", "lastSyncTime": "2026-12-05T08:00:01Z",
    }  # fmt: skip
    stored = {
        "labels": {}, "annotations": {}, "targets": [{"clusters": ["edge-1"]}], "strategy": {},
        "history": [], "live": {"targets": [[target, False, 1]], "changed": "2026-12-05T08:00:00Z"},
    }  # fmt: skip
    uid = f"8d0f0c1e-0000-4000-8000-{rollout_id:012d}"
    return Row(rollout_id, f"web-{rollout_id}", uid, 7, 1, "2026-12-05T07:00:00Z", None,
               "app-v1", None, False, 1, json.dumps(stored))  # fmt: skip


def test_an_unchanged_row_gets_the_bytes_kept_and_a_changed_one_its_own() -> None:
    documents = RenderedDocuments()
    first = documents.encoded(row(), "team")
    assert first == pydantic_core.to_json(deployment_document(row(), "team"))
    assert documents.encoded(row(), "team") is first  # another Row of the same values

    changed = documents.encoded(row(phase="Failed", message="image pull failed"), "team")
    status = json.loads(changed)["status"]
    assert status["phase"] == "Failed"
    assert status["targets"][0]["message"] == "image pull failed"
    assert json.loads(documents.encoded(row(), "team"))["status"]["phase"] == "Ready"
    assert json.loads(documents.encoded(row(), "other"))["metadata"]["workspace"] == "other"
    assert len(documents) == 2  # a rollout's last rendering only, per workspace


def test_the_cache_keeps_to_its_budget_and_drops_the_least_recently_used() -> None:
    one = len(RenderedDocuments().encoded(row(), "team"))
    documents = RenderedDocuments(budget_bytes=30 * one)  # room for a dozen entries, not 50
    kept = documents.encoded(row(0), "team")
    early = documents.encoded(row(1), "team")
    for i in range(2, 50):
        documents.encoded(row(i), "team")
        assert documents.encoded(row(0), "team") is kept  # used, so never the one dropped
    assert 2 <= len(documents) < 50
    again = documents.encoded(row(1), "team")
    assert again == early
    assert again is not early  # dropped long ago: built again

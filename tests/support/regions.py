"""Regions as the tests create them: the collection's path and a Region body."""

from __future__ import annotations

API = "/api/v1/regions"


def region(name: str, labels: dict[str, str] | None = None, **spec: str) -> dict[str, object]:
    return {
        "apiVersion": "edge.theriseunion.io/v1alpha1",
        "kind": "Region",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }

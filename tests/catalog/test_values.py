"""Helm's value merging: maps deep-merged, lists and scalars replaced, null deletes."""

from app.catalog.values import merge_values


def test_merge_like_helm() -> None:
    chart = {
        "image": {"repository": "nginx", "tag": "1.0"},
        "ports": [80, 443],
        "replicaCount": 1,
        "debug": {"enabled": False},
    }
    version = {"image": {"tag": "1.1"}, "ports": [8080]}
    target = {"replicaCount": 3, "debug": None, "nodeSelector": {"zone": "a"}}
    assert merge_values(chart, version, target) == {
        "image": {"repository": "nginx", "tag": "1.1"},
        "ports": [8080],
        "replicaCount": 3,
        "nodeSelector": {"zone": "a"},
    }
    assert chart["image"] == {"repository": "nginx", "tag": "1.0"}  # inputs are not changed

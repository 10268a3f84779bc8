"""The built-in charts (charts/builtin-src/<name>), as their tests read them: rendered by Helm's
own Go SDK (helm-python-sdk), linted strictly, every manifest validated against the Kubernetes
schemas of the oldest supported (1.25) and the newest available version, and the packaged
archive the platform serves (charts/builtin/<name>-<version>.tgz) compared with the source."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

from app.catalog.charts import inspect_chart

ROOT = Path(__file__).parents[2]
SOURCES = ROOT / "charts" / "builtin-src"
ARCHIVES = ROOT / "charts" / "builtin"
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
LINT_KUBE_VERSIONS = ("v1.25.0", "v1.34.0")

Manifest = dict[str, Any]


@contextmanager
def loaded(name: str) -> Iterator[helm.Chart]:
    chart = helm.Chart.load(str(SOURCES / name))
    try:
        yield chart
    finally:
        chart.close()


def render(
    chart: helm.Chart, values: dict[str, Any] | None = None, *, release: str, namespace: str
) -> list[Manifest]:
    """Every manifest the chart renders (NOTES.txt left out), in file order."""
    rendered = chart.render(values or {}, name=release, namespace=namespace, is_install=True)
    docs: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def validate(docs: list[Manifest]) -> None:
    """Each manifest against the Kubernetes schemas, unknown fields refused."""
    for doc in docs:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def lint(name: str, values: dict[str, Any] | None = None) -> None:
    """`helm lint --strict` against the oldest and a recent Kubernetes: no errors, no warnings."""
    for kube in LINT_KUBE_VERSIONS:
        report = helm.lint(str(SOURCES / name), values or {}, strict=True, kube_version=kube)
        assert report["errors"] == [], report
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def find(docs: list[Manifest], kind: str, name: str) -> Manifest:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(
        f"no {kind} {name} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    )


def pod_specs(docs: list[Manifest]) -> Iterator[tuple[Manifest, dict[str, Any]]]:
    """(workload, pod spec) of every Deployment, StatefulSet, DaemonSet, Job and CronJob."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield doc, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield doc, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def images(docs: list[Manifest]) -> list[str]:
    """Every container image the manifests run, init containers included."""
    found = []
    for _, spec in pod_specs(docs):
        for container in spec.get("initContainers", []) + spec["containers"]:
            found.append(container["image"])
    return found


def archive_path(name: str) -> Path:
    version = yaml.safe_load((SOURCES / name / "Chart.yaml").read_text())["version"]
    return ARCHIVES / f"{name}-{version}.tgz"


def assert_archive_is_the_source(name: str, values: dict[str, Any] | None = None) -> None:
    """What the platform serves is the source: the archive holds exactly its files, byte for
    byte, the platform accepts it as the chart's name, version and appVersion, and it renders
    as the source does (`values`: whatever makes the render deterministic, e.g. a password).
    Rebuild with `scripts/package-chart charts/builtin-src/<name> charts/builtin`."""
    archive = assert_archive_matches_source(name)
    chart_yaml = yaml.safe_load((SOURCES / name / "Chart.yaml").read_text())
    info = inspect_chart(archive)
    expected = (name, chart_yaml["version"], chart_yaml["appVersion"])
    assert (info.name, info.version, info.app_version) == expected
    from_archive = helm.Chart.load_archive(archive)
    try:
        with loaded(name) as source:
            assert from_archive.render(values or {}, name="release", namespace="ns") == (
                source.render(values or {}, name="release", namespace="ns")
            )
    finally:
        from_archive.close()


def assert_archive_matches_source(name: str) -> bytes:
    """The packaged archive holds exactly the source's files, byte for byte; returns it."""
    archive = archive_path(name).read_bytes()
    packed: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        for member in tar.getmembers():
            assert member.isfile(), member.name
            extracted = tar.extractfile(member)
            assert extracted is not None
            packed[member.name] = extracted.read()
    source_dir = SOURCES / name
    source = {
        f"{name}/{path.relative_to(source_dir)}": path.read_bytes()
        for path in sorted(source_dir.rglob("*"))
        if path.is_file()
    }
    assert sorted(packed) == sorted(source), f"{name}'s archive is stale: package the chart again"
    for path, content in source.items():
        assert packed[path] == content, f"{path} differs from the archive: package it again"
    return archive

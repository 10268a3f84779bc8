"""Helm chart archives: validated before they enter the repository.

A chart is a gzip'd tar holding exactly one top-level directory with a `Chart.yaml` whose
`name` matches the directory and whose `version` is SemVer 2. Archives are read as a stream with
a cap on decompressed bytes, so a decompression bomb is refused without being expanded in
memory; absolute paths, `..`, links and device files are refused.

`Chart.yaml` is read the way Helm reads it: a field Helm reads as text keeps the text as written
(`appVersion: 1.10` is "1.10", not the number 1.1), and a field of the wrong shape (a list where
Helm wants text) is refused, since once in index.yaml it would stop Helm from reading the whole
repository. Fields Helm does not know are kept as JSON: dates and other YAML-only values as the
text written.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import re
import tarfile
import zlib
from dataclasses import dataclass
from typing import Any

import yaml

from app.kit.body import NoAliasLoader

MAX_COMPRESSED_BYTES = 20 << 20
MAX_UNCOMPRESSED_BYTES = 100 << 20
MAX_CHART_YAML_BYTES = 1 << 20

# SemVer 2.0.0, as Helm requires for chart versions. The patterns are also the OpenAPI
# document's (app/catalog/schemas.py): valid in Python, Rust (pydantic-core) and ECMA-262 alike,
# so `[0-9]` (Python's `\d` takes any Unicode digit) and, in Python, fullmatch (there `$` also
# matches before a final newline).
_PRERELEASE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
_CORE = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
_PRERELEASE = rf"(?:-({_PRERELEASE_ID}(?:\.{_PRERELEASE_ID})*))?"
SEMVER_PATTERN = rf"{_CORE}{_PRERELEASE}(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
SEMVER_WITHOUT_BUILD_PATTERN = rf"{_CORE}{_PRERELEASE}$"
SEMVER = re.compile(SEMVER_PATTERN)
CHART_NAME_PATTERN = r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$"
CHART_NAME = re.compile(CHART_NAME_PATTERN)
MAX_CHART_NAME_CHARS = 63
# The columns that hold these (chart_archives.version, app_version, description).
MAX_VERSION_CHARS, MAX_APP_VERSION_CHARS, MAX_DESCRIPTION_CHARS = 128, 128, 4096

STR, NULL, BOOL = "tag:yaml.org,2002:str", "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool"
INT, FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
SEQ, MAP, MERGE = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map", "tag:yaml.org,2002:merge"

# The Go types Helm reads Chart.yaml into (helm.sh/helm/v3/pkg/chart: Metadata, Maintainer,
# Dependency). A dict lists a mapping's fields ("*": every field); a one-item list, a list of that.
TEXT, FLAG, ANYTHING = "text", "true or false", "anything"
Shape = str | dict[str, "Shape"] | list["Shape"]
MAINTAINER: Shape = {"name": TEXT, "email": TEXT, "url": TEXT}
DEPENDENCY: Shape = {
    "name": TEXT, "version": TEXT, "repository": TEXT, "condition": TEXT, "tags": [TEXT],
    "enabled": FLAG, "alias": TEXT,
}  # fmt: skip
CHART_YAML: Shape = {
    "apiVersion": TEXT, "name": TEXT, "version": TEXT, "appVersion": TEXT, "kubeVersion": TEXT,
    "description": TEXT, "type": TEXT, "home": TEXT, "icon": TEXT, "condition": TEXT,
    "tags": TEXT, "sources": [TEXT], "keywords": [TEXT], "maintainers": [MAINTAINER],
    "deprecated": FLAG, "annotations": {"*": TEXT}, "dependencies": [DEPENDENCY],
}  # fmt: skip


class InvalidChart(ValueError):
    def __init__(self, message: str) -> None:
        # Messages quote the archive's own names and keys. tarfile keeps bytes that are not
        # UTF-8 as lone surrogates, which no JSON answer can encode: they are shown escaped.
        super().__init__(message.encode("utf-8", "backslashreplace").decode())


@dataclass(frozen=True)
class ChartInfo:
    name: str
    version: str
    app_version: str | None
    description: str | None
    api_version: str
    metadata: dict[str, Any]  # the whole Chart.yaml
    digest: str  # sha256 of the archive
    size: int


class _Capped(io.RawIOBase):
    """A reader that refuses to yield more than `limit` bytes of decompressed data."""

    def __init__(self, source: gzip.GzipFile, limit: int) -> None:
        self._source = source
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._source.read(min(len(buffer), self._left + 1))
        if len(chunk) > self._left:
            raise InvalidChart(
                f"the chart expands to more than {MAX_UNCOMPRESSED_BYTES >> 20} MiB; refused"
            )
        self._left -= len(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _check_member(member: tarfile.TarInfo) -> str:
    name = member.name
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise InvalidChart(f"archive entry {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidChart(f"archive entry {name!r} leaves the chart directory (..)")
    if member.issym() or member.islnk():
        raise InvalidChart(f"archive entry {name!r} is a link; links are not accepted")
    if not (member.isfile() or member.isdir()):
        raise InvalidChart(f"archive entry {name!r} is a device or special file")
    if not parts:
        raise InvalidChart("archive has an entry without a name")
    return parts[0]


def inspect_chart(archive: bytes) -> ChartInfo:
    if len(archive) > MAX_COMPRESSED_BYTES:
        raise InvalidChart(f"the archive is larger than {MAX_COMPRESSED_BYTES >> 20} MiB")
    if archive[:2] != b"\x1f\x8b":
        raise InvalidChart("not a gzip file: upload the chart .tgz made by `helm package`")
    tops: set[str] = set()
    chart_yaml: bytes | None = None
    chart_yaml_path: str | None = None
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(archive)) as unzipped:
            stream = io.BufferedReader(_Capped(unzipped, MAX_UNCOMPRESSED_BYTES))
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    top = _check_member(member)
                    tops.add(top)
                    if len(tops) > 1:
                        raise InvalidChart(
                            "the archive must hold exactly one top-level chart directory"
                        )
                    if member.isfile() and member.name.strip("/") == f"{top}/Chart.yaml":
                        if member.size > MAX_CHART_YAML_BYTES:
                            raise InvalidChart("Chart.yaml is larger than 1 MiB")
                        extracted = tar.extractfile(member)
                        assert extracted is not None
                        chart_yaml, chart_yaml_path = extracted.read(), member.name
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
        raise InvalidChart(f"the archive is corrupt: {type(exc).__name__}: {exc}") from None
    if not tops:
        raise InvalidChart("the archive is empty")
    top = next(iter(tops))
    if chart_yaml is None:
        raise InvalidChart(f"the archive has no {top}/Chart.yaml")
    return _chart_info(archive, top, chart_yaml, chart_yaml_path or "")


def _chart_info(archive: bytes, top: str, raw: bytes, path: str) -> ChartInfo:
    metadata = _read_chart_yaml(raw, path)
    name, version = metadata.get("name"), metadata.get("version")
    api_version = metadata.get("apiVersion")
    if api_version not in ("v1", "v2"):
        raise InvalidChart(f"Chart.yaml apiVersion must be v1 or v2, not {api_version!r}")
    if (
        not isinstance(name, str)
        or not CHART_NAME.fullmatch(name)
        or len(name) > MAX_CHART_NAME_CHARS
    ):
        raise InvalidChart("Chart.yaml name must be lower-case alphanumerics and '-'")
    if name != top:
        raise InvalidChart(f"Chart.yaml name {name!r} does not match its directory {top!r}")
    if not isinstance(version, str) or not SEMVER.fullmatch(version):
        raise InvalidChart(f"Chart.yaml version {version!r} is not SemVer 2 (e.g. 1.2.3)")
    app_version = metadata.get("appVersion")
    description = metadata.get("description")
    for field, value, limit in (
        ("version", version, MAX_VERSION_CHARS),
        ("appVersion", app_version, MAX_APP_VERSION_CHARS),
        ("description", description, MAX_DESCRIPTION_CHARS),
    ):
        if isinstance(value, str) and len(value) > limit:
            raise InvalidChart(f"Chart.yaml {field} is longer than {limit} characters")
    return ChartInfo(
        name=name,
        version=version,
        app_version=app_version,
        description=description,
        api_version=str(api_version),
        metadata=metadata,
        digest=hashlib.sha256(archive).hexdigest(),
        size=len(archive),
    )


def _read_chart_yaml(raw: bytes, path: str) -> dict[str, Any]:
    try:
        metadata = _load_as_helm_reads(raw)
    except yaml.YAMLError as exc:
        raise InvalidChart(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise InvalidChart(f"{path} is nested too deeply") from None
    if not isinstance(metadata, dict):
        raise InvalidChart(f"{path} must be a mapping")
    _check_storable(metadata, "")
    return metadata


def _load_as_helm_reads(raw: bytes) -> Any:
    loader = NoAliasLoader(raw)
    try:
        node = loader.get_single_node()
        if not isinstance(node, yaml.MappingNode):
            return None
        _read_as_helm(loader, node, CHART_YAML, "")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _where(path: str) -> str:
    return f"Chart.yaml {path}" if path else "Chart.yaml"


def _read_as_helm(loader: NoAliasLoader, node: yaml.Node, shape: Shape, path: str) -> None:
    """Retag `node` in place so that constructing it gives what Helm reads, and only JSON;
    refuse what Helm could not read. Null is the Go zero value, accepted everywhere but as an
    item of a list of mappings (Helm refuses those)."""
    if isinstance(node, yaml.ScalarNode) and node.tag == NULL:
        return
    if shape == TEXT:
        if not isinstance(node, yaml.ScalarNode):
            raise InvalidChart(f"{_where(path)} must be text, not a list or mapping")
        node.tag = STR
    elif shape == FLAG:
        if not _is_bool(node):
            raise InvalidChart(f"{_where(path)} must be true or false")
    elif isinstance(shape, list):
        if not isinstance(node, yaml.SequenceNode):
            raise InvalidChart(f"{_where(path)} must be a list")
        for index, item in enumerate(node.value):
            if isinstance(shape[0], dict) and not isinstance(item, yaml.MappingNode):
                raise InvalidChart(f"{_where(path)}[{index}] must be a mapping")
            _read_as_helm(loader, item, shape[0], f"{path}[{index}]")
        node.tag = SEQ
    elif isinstance(shape, dict) or isinstance(node, yaml.MappingNode):
        if not isinstance(node, yaml.MappingNode):
            raise InvalidChart(f"{_where(path)} must be a mapping")
        fields = shape if isinstance(shape, dict) else {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise InvalidChart(f"{_where(path)} has a key that is not text")
            if key.tag == MERGE:
                # Merging is for anchored mappings, and the loader refuses anchors.
                raise InvalidChart(f"{_where(path)}: YAML merge keys (<<) are not accepted")
            key.tag = STR  # JSON keys are text, as in Helm's reading of YAML through JSON
            field = f"{path}.{key.value}" if path else key.value
            _read_as_helm(loader, value, fields.get(key.value, fields.get("*", ANYTHING)), field)
        node.tag = MAP  # !!set and unknown tags: a plain mapping
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _read_as_helm(loader, item, ANYTHING, f"{path}[{index}]")
        node.tag = SEQ  # !!omap, !!pairs and unknown tags: a plain list
    elif isinstance(node, yaml.ScalarNode) and not _json_scalar(loader, node):
        node.tag = STR  # dates, !!binary, .nan, .inf, unknown tags: the text as written


def _is_bool(node: yaml.Node) -> bool:
    return (
        isinstance(node, yaml.ScalarNode)
        and node.tag == BOOL
        and node.value.lower() in yaml.SafeLoader.bool_values
    )


def _json_scalar(loader: NoAliasLoader, node: yaml.ScalarNode) -> bool:
    """Does this scalar construct to a value JSON holds as it is?"""
    if node.tag == STR:
        return True
    if node.tag == BOOL:
        return _is_bool(node)
    try:
        if node.tag == INT:
            loader.construct_yaml_int(node)
            return True
        if node.tag == FLOAT:
            return math.isfinite(loader.construct_yaml_float(node))
    except ValueError:  # not a number after all, or more digits than Python converts
        return False
    return False


def _check_storable(value: Any, path: str) -> None:
    """PostgreSQL stores no NUL character and no lone UTF-16 surrogate in text or JSON, and
    YAML's escapes can make both."""
    texts: list[tuple[str, str]] = []
    if isinstance(value, str):
        texts.append((value, path))
    elif isinstance(value, dict):
        for key, item in value.items():
            field = f"{path}.{key}" if path else str(key)
            texts.append((str(key), field))
            _check_storable(item, field)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, f"{path}[{index}]")
    for text, where in texts:
        if "\x00" in text:
            raise InvalidChart(f"{_where(where)} holds a NUL character")
        try:
            text.encode()
        except UnicodeEncodeError:
            raise InvalidChart(f"{_where(where)} holds a lone UTF-16 surrogate") from None

"""Helm chart archives: validated before they enter the repository.

A chart is a gzip'd tar holding exactly one top-level directory with a `Chart.yaml` whose
`name` matches the directory and whose `version` is SemVer 2. Archives are read as a stream with
a cap on decompressed bytes, so a decompression bomb is refused without being expanded in
memory; absolute paths, `..`, links and device files are refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
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

# SemVer 2.0.0, as Helm requires for chart versions.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
CHART_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class InvalidChart(ValueError):
    pass


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
    try:
        metadata = yaml.load(raw, Loader=NoAliasLoader)  # noqa: S506 - safe loader subclass
    except yaml.YAMLError:
        raise InvalidChart(f"{path} is not valid YAML") from None
    if not isinstance(metadata, dict):
        raise InvalidChart(f"{path} must be a mapping")
    name, version = metadata.get("name"), metadata.get("version")
    api_version = metadata.get("apiVersion")
    if api_version not in ("v1", "v2"):
        raise InvalidChart(f"Chart.yaml apiVersion must be v1 or v2, not {api_version!r}")
    if not isinstance(name, str) or not CHART_NAME.match(name) or len(name) > 63:
        raise InvalidChart("Chart.yaml name must be lower-case alphanumerics and '-'")
    if name != top:
        raise InvalidChart(f"Chart.yaml name {name!r} does not match its directory {top!r}")
    if not isinstance(version, str) or not SEMVER.match(version):
        raise InvalidChart(f"Chart.yaml version {version!r} is not SemVer 2 (e.g. 1.2.3)")
    app_version = metadata.get("appVersion")
    description = metadata.get("description")
    return ChartInfo(
        name=name,
        version=version,
        app_version=str(app_version) if app_version is not None else None,
        description=str(description) if description is not None else None,
        api_version=str(api_version),
        metadata=metadata,
        digest=hashlib.sha256(archive).hexdigest(),
        size=len(archive),
    )

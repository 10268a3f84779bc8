"""Chart archives made in tests, good and deliberately bad."""

from __future__ import annotations

import gzip
import io
import tarfile

import yaml


def chart_archive(
    name: str = "demo",
    version: str = "1.0.0",
    *,
    top: str | None = None,
    chart_yaml: dict[str, object] | None = None,
    extra: list[tarfile.TarInfo] = (),  # type: ignore[assignment]
    files: dict[str, bytes] | None = None,
) -> bytes:
    top = top or name
    metadata = chart_yaml or {
        "apiVersion": "v2",
        "name": name,
        "version": version,
        "appVersion": "2.0",
        "description": f"{name} chart",
    }
    contents = {
        f"{top}/Chart.yaml": yaml.safe_dump(metadata).encode(),
        f"{top}/values.yaml": b"replicaCount: 1\n",
        f"{top}/templates/cm.yaml": (
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
            b"data:\n  replicas: {{ .Values.replicaCount | quote }}\n"
        ),
    }
    contents.update(files or {})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, data in contents.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return gzip.compress(buffer.getvalue())


def special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def bomb(uncompressed_mib: int = 150) -> bytes:
    """A valid-looking chart whose values.yaml expands to `uncompressed_mib` MiB."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        chart = yaml.safe_dump({"apiVersion": "v2", "name": "bomb", "version": "1.0.0"}).encode()
        info = tarfile.TarInfo("bomb/Chart.yaml")
        info.size = len(chart)
        tar.addfile(info, io.BytesIO(chart))
        info = tarfile.TarInfo("bomb/values.yaml")
        info.size = uncompressed_mib << 20

        class Zeros(io.RawIOBase):
            left = info.size

            def readable(self) -> bool:
                return True

            def readinto(self, b):  # type: ignore[no-untyped-def]
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Zeros()))
    return buffer.getvalue()

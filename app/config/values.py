"""How setting values are written, and the error a bad one is reported with: Go durations,
libpq database URLs (translated for asyncpg), `host:port` bind addresses, comma-separated
lists."""

from __future__ import annotations

import re
import ssl
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BeforeValidator


class ConfigError(Exception):
    """A setting that makes it unsafe or impossible to start; the message names the setting."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: Any) -> float:
    """Parse a Go duration (`15s`, `1m30s`, `500ms`) or a plain number of seconds."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"invalid duration {text!r}: use Go form such as 15s, 1m30s, 500ms"
                ) from None
    if seconds < 0:
        raise ValueError("duration must not be negative")
    return seconds


Seconds = Annotated[float, BeforeValidator(parse_duration)]

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class DatabaseTarget:
    """A libpq-style `DATABASE_URL` translated for SQLAlchemy + asyncpg."""

    def __init__(self, sqlalchemy_url: str, ssl: ssl.SSLContext | str | bool | None) -> None:
        self.sqlalchemy_url = sqlalchemy_url
        self.ssl = ssl


def translate_database_url(url: str) -> DatabaseTarget:
    """Turn `postgres://u:p@h:5432/db?sslmode=verify-full&sslrootcert=...` into an asyncpg target.

    libpq's ssl parameters are not understood by asyncpg's URL parser in full (certificate paths),
    so they are removed from the URL and expressed as an `ssl` argument instead.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "postgresql+asyncpg"):
        raise ConfigError(
            f"DATABASE_URL: scheme {parts.scheme!r} is not PostgreSQL "
            "(expected postgres:// or postgresql://)"
        )
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    sslmode = query.pop("sslmode", None)
    rootcert = query.pop("sslrootcert", None)
    cert = query.pop("sslcert", None)
    key = query.pop("sslkey", None)
    if sslmode is not None and sslmode not in SSL_MODES:
        raise ConfigError(f"DATABASE_URL: sslmode={sslmode!r} is not one of {', '.join(SSL_MODES)}")
    ssl_arg = _ssl_argument(sslmode, rootcert, cert, key)
    rebuilt = urlunsplit(
        ("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), parts.fragment)
    )
    return DatabaseTarget(rebuilt, ssl_arg)


def _ssl_argument(
    sslmode: str | None, rootcert: str | None, cert: str | None, key: str | None
) -> ssl.SSLContext | str | bool | None:
    if sslmode == "disable":
        return False
    if sslmode in (None, "allow", "prefer") and not (cert or rootcert):
        # asyncpg implements libpq's opportunistic modes itself.
        return sslmode
    verify = sslmode in ("verify-ca", "verify-full") or (sslmode == "require" and rootcert)
    context = (
        ssl.create_default_context(cafile=rootcert) if verify else ssl.create_default_context()
    )
    context.check_hostname = sslmode == "verify-full"
    if not verify:
        # libpq's `require` without a root certificate encrypts but does not authenticate.
        context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(cert, keyfile=key)
    return context


def split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def parse_bind_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return (host.strip("[]") or "0.0.0.0"), int(port)  # noqa: S104 - Go's ":8080" means all

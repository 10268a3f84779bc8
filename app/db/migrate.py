"""Alembic, driven from code (`edge-platform migrate`, `dev`, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _locate() -> tuple[Path, Path]:
    """alembic.ini and migrations/: beside the package in a checkout, inside it in a wheel."""
    for ini, scripts in (
        (_PACKAGE_DIR.parent / "alembic.ini", _PACKAGE_DIR.parent / "migrations"),
        (_PACKAGE_DIR / "_migrations" / "alembic.ini", _PACKAGE_DIR / "_migrations"),
    ):
        if ini.is_file() and (scripts / "env.py").is_file():
            return ini, scripts
    raise FileNotFoundError("cannot find alembic.ini and migrations/ for this installation")


def alembic_config(database_url: str | None = None, *, configure_logging: bool = True) -> Config:
    ini, scripts = _locate()
    config = Config(str(ini))
    config.set_main_option("script_location", str(scripts))
    config.attributes["configure_logging"] = configure_logging
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str | None = None, revision: str = "-1") -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str | None = None) -> None:
    command.current(alembic_config(database_url), verbose=True)

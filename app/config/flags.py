"""The API server's command-line flags (Go flag syntax), accepted in `API_SERVER_ARGS` and on
the command line; they override the environment, and the command line overrides
`API_SERVER_ARGS`."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from app.config.settings import Settings
from app.config.values import ConfigError


def _go_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "t", "true", "yes"):
        return True
    if lowered in ("0", "f", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean")


# Flag name → settings field; the same flags are accepted in API_SERVER_ARGS and on the CLI.
SERVER_FLAGS: dict[str, str] = {
    "--log-level": "log_level",
    "--metrics-bind-address": "metrics_bind_address",
    "--health-probe-bind-address": "health_probe_bind_address",
    "--leader-elect": "leader_elect",
    "--leader-elect-lease-duration": "leader_elect_lease_duration",
    "--leader-elect-renew-deadline": "leader_elect_renew_deadline",
    "--leader-elect-retry-period": "leader_elect_retry_period",
}


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    """Register the deployment guide's API server flags (Go flag syntax, defaults from env)."""
    for flag, field in SERVER_FLAGS.items():
        help_text = Settings.model_fields[field].description
        if field == "leader_elect":
            parser.add_argument(
                flag, dest=field, nargs="?", const=True, type=_go_bool, default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=field, default=None, help=help_text)


def apply_server_flags(settings: Settings, argv: list[str]) -> Settings:
    """Return settings updated by `API_SERVER_ARGS` and then by `argv` (the later one wins)."""
    parser = argparse.ArgumentParser(prog="API_SERVER_ARGS", add_help=False, exit_on_error=False)
    add_server_flags(parser)
    updates: dict[str, Any] = {}
    for source, args in (("API_SERVER_ARGS", shlex.split(settings.api_server_args)), ("", argv)):
        try:
            namespace, unknown = parser.parse_known_args(args)
        except argparse.ArgumentError as exc:
            raise ConfigError(f"{source or 'command line'}: {exc}") from exc
        if source and unknown:
            raise ConfigError(f"API_SERVER_ARGS: unknown flags {' '.join(unknown)}")
        updates.update({k: v for k, v in vars(namespace).items() if v is not None})
    if not updates:
        return settings
    merged = settings.model_dump()
    merged.update(updates)
    try:
        return Settings.model_validate(merged)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

"""Operator settings: the only package that reads the environment.

Names follow the deployment guide exactly (`DATABASE_URL`, `REDIS_ADDRESSES`, `JWT_SECRET`,
`API_SERVER_ARGS`, ...). Precedence, lowest first: defaults, environment variables, the flags
in `API_SERVER_ARGS`, flags on the command line.

`settings` holds the one `Settings` class and `load_settings`; `values` the forms values take
(Go durations, libpq database URLs, bind addresses) and `ConfigError`; `flags` the API server's
command-line flags. Import from `app.config`.
"""

from app.config.flags import SERVER_FLAGS, add_server_flags, apply_server_flags
from app.config.settings import (
    MIN_PRODUCTION_PASSWORD,
    MIN_SECRET_BYTES,
    PLACEHOLDER_SECRETS,
    WELL_KNOWN_PASSWORDS,
    BuiltinChart,
    Mode,
    Settings,
    load_settings,
)
from app.config.values import (
    SSL_MODES,
    ConfigError,
    DatabaseTarget,
    Seconds,
    parse_bind_address,
    parse_duration,
    translate_database_url,
)

__all__ = [
    "MIN_PRODUCTION_PASSWORD",
    "MIN_SECRET_BYTES",
    "PLACEHOLDER_SECRETS",
    "SERVER_FLAGS",
    "SSL_MODES",
    "WELL_KNOWN_PASSWORDS",
    "BuiltinChart",
    "ConfigError",
    "DatabaseTarget",
    "Mode",
    "Seconds",
    "Settings",
    "add_server_flags",
    "apply_server_flags",
    "load_settings",
    "parse_bind_address",
    "parse_duration",
    "translate_database_url",
]

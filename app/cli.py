"""`edge-platform`: serve, controller, console, migrate, dev, agent, version; and the
operator's maintenance commands (users, rotate-key, charts) of app/maintenance.py."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

import app as app_package
from app.agent.settings import add_agent_flags
from app.config import (
    ConfigError,
    Settings,
    add_server_flags,
    apply_server_flags,
    load_settings,
)
from app.embedded import EmbeddedError
from app.maintenance import cmd_charts, cmd_rotate_key, cmd_users
from app.observability import configure_logging, logging_config

if TYPE_CHECKING:
    from app.demo.command import Welcome

logger = logging.getLogger("edge_platform")


async def serve_api(
    settings: Settings,
    host: str,
    port: int,
    *,
    dev: bool = False,
    console_port: int = 0,
    on_started: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run the API, plus the side listeners for metrics and health probes when configured
    (and, in `dev`, the console); `on_started` runs once every listener listens."""
    from app.main import create_app
    from app.serving import API_WEBSOCKETS, COMMON, Listener, side_listeners

    api = create_app(settings, dev=dev)
    main = Listener(
        uvicorn.Config(api, host=host, port=port, proxy_headers=True, **COMMON, **API_WEBSOCKETS)
    )
    servers = [main, *side_listeners(api, settings)]
    if console_port:
        from app.console.app import create_console_app

        console = create_console_app(settings, secret=settings.console_secret())
        servers.append(Listener(uvicorn.Config(console, host=host, port=console_port, **COMMON)))

    def stop() -> None:
        api.state.draining.set()  # event streams end now; clients resume elsewhere
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    tasks = [asyncio.create_task(server.serve()) for server in servers]

    async def when_started() -> None:
        while not all(server.started for server in servers):  # noqa: ASYNC110 - uvicorn's flag
            await asyncio.sleep(0.05)
        if on_started is not None:
            await on_started()

    started = asyncio.create_task(when_started())
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop()  # one listener stopped (a signal, or its port in use): stop them all
    started.cancel()
    await asyncio.gather(*pending, started, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def _settings(args: argparse.Namespace, flag_argv: Sequence[str]) -> Settings:
    return apply_server_flags(load_settings(), list(flag_argv))


def cmd_serve(args: argparse.Namespace, flag_argv: Sequence[str]) -> int:
    from app.auth.tokens import load_signing_key
    from app.crypto import secret_box
    from app.serving import API_WEBSOCKETS
    from app.tunnel.workers import RELAY_HOST_ENV

    settings = _settings(args, flag_argv)
    settings.check_production_secrets()
    settings.database  # noqa: B018 - fails early with a clear message when unset
    load_signing_key(settings)  # likewise for JWT_SECRET / JWT_PRIVATE_KEY_FILE
    secret_box(settings)  # and ENCRYPTION_KEY
    configure_logging(settings.log_level)
    if args.workers > 1:
        if settings.metrics_bind_address or settings.health_probe_bind_address:
            raise ConfigError(
                "--metrics-bind-address and --health-probe-bind-address need --workers=1 "
                "(scale with replicas instead); /metrics and the health paths are always "
                "served on the main port"
            )
        # Each worker serves relayed calls to the agents it holds on a port of its own.
        os.environ[RELAY_HOST_ENV] = args.host
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=logging_config(settings.log_level),
            access_log=False,
            proxy_headers=True,
            **API_WEBSOCKETS,
        )
        return 0
    asyncio.run(serve_api(settings, args.host, args.port))
    return 0


def cmd_controller(args: argparse.Namespace, flag_argv: Sequence[str]) -> int:
    from app.controller.process import run_controller
    from app.crypto import secret_box

    settings = _settings(args, flag_argv)
    settings.check_production_secrets()
    settings.database  # noqa: B018 - fails early with a clear message when unset
    secret_box(settings)
    configure_logging(settings.log_level)
    asyncio.run(run_controller(settings))
    return 0


def cmd_console(args: argparse.Namespace, flag_argv: Sequence[str]) -> int:
    from app.console.app import create_console_app
    from app.serving import COMMON

    settings = _settings(args, flag_argv)
    if args.api_url:
        settings = settings.model_copy(update={"console_api_url": args.api_url})
    console = create_console_app(settings, secret=settings.console_secret())
    configure_logging(settings.log_level)
    # COMMON bounds a stop: open live pages are cut after its grace period (browsers resume).
    uvicorn.run(console, host=args.host, port=args.port, proxy_headers=True, **COMMON)
    return 0


def cmd_migrate(args: argparse.Namespace, flag_argv: Sequence[str]) -> int:
    from app.db import migrate

    settings = load_settings()
    settings.database  # noqa: B018 - fails early with a clear message when unset
    if args.action == "upgrade":
        migrate.upgrade(settings.database_url, args.revision or "head")
    elif args.action == "downgrade":
        migrate.downgrade(settings.database_url, args.revision or "-1")
    else:
        migrate.current(settings.database_url)
    return 0


def cmd_dev(args: argparse.Namespace, flag_argv: Sequence[str]) -> int:
    from app.db import migrate
    from app.demo import command as demo
    from app.embedded import EmbeddedPostgres, EmbeddedRedis, StateDir

    settings = _settings(args, flag_argv)
    if args.state_dir:
        settings = settings.model_copy(update={"edge_state_dir": Path(args.state_dir)})
    configure_logging(settings.log_level)
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    with StateDir(settings.edge_state_dir) as state:
        try:
            updates: dict[str, object] = {}
            if not settings.database_url:
                postgres = EmbeddedPostgres(state.path / "postgres")
                updates["database_url"] = postgres.start()
            if not (settings.redis_url or settings.redis_addresses):
                redis = EmbeddedRedis(state.path / "redis")
                updates["redis_url"] = redis.start(state.secret("redis-password"))
            updates["jwt_secret"] = settings.jwt_secret or state.secret("jwt-secret")
            updates["encryption_key"] = settings.encryption_key or state.secret("encryption-key")
            updates["console_session_secret"] = settings.console_session_secret or state.secret(
                "console-session-secret"
            )
            # The API and the console below share it: sign-ins are counted per browser.
            updates["console_forwarding_secret"] = (
                settings.console_forwarding_secret or state.secret("console-forwarding-secret")
            )
            password_from_env = settings.admin_password is not None
            updates["admin_password"] = settings.admin_password or state.secret(
                demo.INITIAL_ADMIN_PASSWORD, nbytes=12
            )
            local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # noqa: S104
            updates["console_api_url"] = f"http://{local}:{args.port}"
            if args.console_port and not settings.console_public_url:
                updates["console_public_url"] = f"http://{local}:{args.console_port}"
            # The controller runs in this process: agents' tunnels are this API's own.
            updates["agent_proxy_url"] = settings.agent_proxy_url or updates["console_api_url"]
            if settings.allow_private_cluster_endpoints is None:
                updates["allow_private_cluster_endpoints"] = True
            settings = settings.model_copy(update=updates)
            migrate.upgrade(settings.database_url)
            configure_logging(settings.log_level)  # alembic's fileConfig replaced our handlers
            welcome = demo.Welcome(
                api_url=f"http://{args.host}:{args.port}",
                console_url=f"http://{args.host}:{args.console_port}"
                if args.console_port
                else None,
                state_dir=state.path,
                postgres="embedded" if postgres else "DATABASE_URL",
                redis="embedded" if redis else "configured",
                password_from_env=password_from_env,
            )
            asyncio.run(_dev(args, settings, welcome, local))
        finally:
            if redis is not None:
                redis.stop()
            if postgres is not None:
                postgres.stop()
    return 0


async def _dev(args: argparse.Namespace, settings: Settings, welcome: Welcome, local: str) -> None:
    """The platform in this process; with `--demo`, the demo fleet beside it. Once all
    listens, the welcome block is printed last, after the start-up logs."""
    from app.demo import command as demo

    api_url = f"http://{local}:{args.port}"
    async with contextlib.AsyncExitStack() as stack:
        fleet = None
        if args.demo:
            port = args.demo_port or args.port + demo.DEMO_PORT_OFFSET
            fleet = await stack.enter_async_context(demo.demo_fleet(local, port))

        async def on_started() -> None:
            await demo.announce(welcome, api_url, settings.admin_password or "", fleet)

        await serve_api(
            settings, args.host, args.port, dev=True, console_port=args.console_port,
            on_started=on_started,
        )  # fmt: skip


def cmd_demo_fleet(args: argparse.Namespace, flag_argv: Sequence[str]) -> int:
    from app.demo import command as demo

    configure_logging(load_settings().log_level)
    state_dir = Path(args.state_dir or load_settings().edge_state_dir)
    if args.remove:
        return asyncio.run(demo.remove_demo_fleet(args.api_url, state_dir))
    return asyncio.run(demo.run_demo_fleet(args.api_url, args.host, args.port, state_dir))


def cmd_agent(args: argparse.Namespace, flag_argv: Sequence[str]) -> int:
    """The edge agent, run in an edge cluster: none of the platform's settings are read."""
    from app.agent.run import run_command
    from app.agent.settings import load_agent_settings

    settings = load_agent_settings(args)
    configure_logging(settings.log_level)
    run_command(settings)
    return 0


def cmd_version(args: argparse.Namespace, flag_argv: Sequence[str]) -> int:
    print(f"edge-platform {app_package.__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # Long on purpose: the whole command line in one declaration, read top to bottom.
    parser = argparse.ArgumentParser(
        prog="edge-platform",
        description="Edge Platform: management plane for fleets of edge Kubernetes clusters.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the API server (production role)")
    serve.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")  # noqa: S104
    serve.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    add_server_flags(serve)
    serve.set_defaults(handler=cmd_serve)

    controller = commands.add_parser(
        "controller", help="run the controller: cluster probes, leader-only housekeeping"
    )
    add_server_flags(controller)
    controller.set_defaults(handler=cmd_controller)

    console = commands.add_parser(
        "console", help="run the web console (a client of the API; no database access)"
    )
    console.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")  # noqa: S104
    console.add_argument("--port", type=int, default=3000, help="listen port (default 3000)")
    console.add_argument("--api-url", help="the API's address (env CONSOLE_API_URL)")
    add_server_flags(console)
    console.set_defaults(handler=cmd_console)

    migrate = commands.add_parser("migrate", help="apply or inspect database migrations")
    migrate.add_argument("action", choices=("upgrade", "downgrade", "current"))
    migrate.add_argument(
        "revision", nargs="?", help="target (upgrade: default head; downgrade: default -1)"
    )
    migrate.set_defaults(handler=cmd_migrate)

    dev = commands.add_parser(
        "dev", help="run everything in one process; embedded PostgreSQL/Redis when unset"
    )
    dev.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    dev.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    dev.add_argument(
        "--console-port", type=int, default=3000, help="console port (default 3000; 0: none)"
    )
    dev.add_argument("--state-dir", help="state folder (env EDGE_STATE_DIR, ./.edge-platform)")
    dev.add_argument(
        "--demo",
        action="store_true",
        help="also run the demo fleet: five emulated edge clusters in three regions, registered",
    )
    dev.add_argument("--demo-port", type=int, default=0, help="its port (default: port + 100)")
    add_server_flags(dev)
    dev.set_defaults(handler=cmd_dev)

    demo = commands.add_parser(
        "demo-fleet",
        help="serve five emulated edge clusters and register them with a running platform "
        "(signs in as admin: ADMIN_PASSWORD, or the dev state folder's)",
    )
    demo.add_argument("--api-url", default="http://127.0.0.1:8000", help="the platform's API")
    demo.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8100, help="listen port (default 8100)")
    demo.add_argument("--state-dir", help="dev state folder (env EDGE_STATE_DIR, ./.edge-platform)")
    demo.add_argument(
        "--remove", action="store_true", help="delete the demo clusters and regions instead"
    )
    demo.set_defaults(handler=cmd_demo_fleet)

    users = commands.add_parser("users", help="manage users at the machine")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    reset = users_commands.add_parser(
        "reset-password", help="give a user a new random password (printed; audited)"
    )
    reset.add_argument("name", help="the user's name, e.g. admin")
    reset.add_argument("--state-dir", help="dev state folder, when DATABASE_URL is not set")
    reset.set_defaults(handler=cmd_users)

    rotate = commands.add_parser(
        "rotate-key", help="re-encrypt stored secrets with the current ENCRYPTION_KEY"
    )
    rotate.set_defaults(handler=cmd_rotate_key)

    charts = commands.add_parser("charts", help="manage the chart repository")
    charts_commands = charts.add_subparsers(dest="charts_command", required=True)
    load = charts_commands.add_parser("load", help="load every .tgz of a folder when absent")
    load.add_argument("folder", help="folder of chart archives")
    load.set_defaults(handler=cmd_charts)

    agent = commands.add_parser(
        "agent",
        help="run the edge agent in an edge cluster: it dials out to the platform and serves "
        "the platform's Kubernetes requests",
    )
    add_agent_flags(agent)
    agent.set_defaults(handler=cmd_agent)

    version = commands.add_parser("version", help="print the version")
    version.set_defaults(handler=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args, argv[1:])
    except ConfigError as exc:
        print(f"edge-platform: configuration error: {exc}", file=sys.stderr)
        return 2
    except EmbeddedError as exc:
        print(f"edge-platform: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())

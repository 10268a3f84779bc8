"""The commands an operator runs against the platform's stored state, beside a running
platform or instead of one: reset a user's password, re-encrypt secrets with a new key, load
charts into the catalog. (`edge-platform` itself is app/cli.py.)"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import sys
from collections.abc import Sequence
from pathlib import Path

from app.config import ConfigError, load_settings
from app.embedded import EmbeddedError


def cmd_users(args: argparse.Namespace, flag_argv: Sequence[str]) -> int:
    """`users reset-password NAME`: against DATABASE_URL, or the dev state folder's embedded
    PostgreSQL (started for the purpose; `dev` must not be running on it)."""
    from app.db.engine import create_engine, create_sessionmaker
    from app.demo import command as demo
    from app.embedded import EmbeddedPostgres, StateDir
    from app.redis import RedisGateway
    from app.users.service import reset_password

    settings = load_settings()
    if args.state_dir:
        settings = settings.model_copy(update={"edge_state_dir": Path(args.state_dir)})

    async def reset(database_url: str) -> str | None:
        engine = create_engine(settings.model_copy(update={"database_url": database_url}))
        # The running API (if any) is told at once; without Redis there is none to tell.
        redis = None
        if settings.redis_url or settings.redis_addresses:
            redis = RedisGateway(url=settings.redis_url, addresses=settings.redis_addresses)
        try:
            return await reset_password(
                create_sessionmaker(engine), redis, args.name,
                by=f"cli:{getpass.getuser()}",
            )  # fmt: skip
        finally:
            if redis is not None:
                await redis.close()
            await engine.dispose()

    if settings.database_url:
        password = asyncio.run(reset(settings.database_url))
    else:
        with contextlib.ExitStack() as stack:
            try:
                state = stack.enter_context(StateDir(settings.edge_state_dir))
            except EmbeddedError as exc:
                raise EmbeddedError(f"{exc}: stop it (Ctrl-C), then run this again") from None
            postgres = EmbeddedPostgres(state.path / "postgres")
            try:
                password = asyncio.run(reset(postgres.start()))
            finally:
                postgres.stop()
            if password is not None and args.name == "admin":
                # What `dev` shows at start and `--demo` signs in with, until changed again.
                state.keep_secret(demo.INITIAL_ADMIN_PASSWORD, password)
    if password is None:
        print(f"edge-platform users: no user {args.name!r}", file=sys.stderr)
        return 1
    print(
        f"new password of {args.name!r}: {password}\n"
        "(every login made with the old one has ended, or ends within a minute where the "
        "platform's Redis was out of reach from here; change this one with "
        "PATCH /api/v1/users/me)"
    )
    return 0


def cmd_rotate_key(args: argparse.Namespace, flag_argv: Sequence[str]) -> int:
    """Re-encrypt stored secrets with the current ENCRYPTION_KEY (previous keys in
    ENCRYPTION_KEYS_PREVIOUS must still be set while this runs)."""
    from app.clusters.service import rotate_kubeconfigs
    from app.configsyncs.sealing import rotate_configsyncs
    from app.crypto import secret_box
    from app.db.engine import create_engine, create_sessionmaker

    settings = load_settings()
    box = secret_box(settings)

    async def rotate() -> tuple[int, int]:
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine).begin() as session:
                return (
                    await rotate_kubeconfigs(session, box),
                    await rotate_configsyncs(session, box),
                )
        finally:
            await engine.dispose()

    kubeconfigs, configs = asyncio.run(rotate())
    print(
        f"re-encrypted {kubeconfigs} kubeconfig(s) and {configs} secret configuration(s) "
        f"with key {box.current_id}"
    )
    return 0


def cmd_charts(args: argparse.Namespace, flag_argv: Sequence[str]) -> int:
    from app.catalog.builtin import load_charts
    from app.db.engine import create_engine, create_sessionmaker
    from app.redis import RedisGateway

    settings = load_settings()
    folder = Path(args.folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder")

    async def load() -> list[str]:
        engine = create_engine(settings)
        redis = RedisGateway(url=settings.redis_url, addresses=settings.redis_addresses)
        try:
            return await load_charts(create_sessionmaker(engine), redis, folder)
        finally:
            if redis is not None:
                await redis.close()
            await engine.dispose()

    added = asyncio.run(load())
    print(f"loaded {len(added)} chart(s): {', '.join(added) or 'none new'}")
    return 0

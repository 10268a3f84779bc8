"""`edge-platform demo-fleet` and the end of `edge-platform dev`'s start: the demo fleet
served and registered, and the block that tells a new user where everything is."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from app.demo.emulator import DemoFleet
from app.demo.fleet import (
    VERSION,
    DemoError,
    Platform,
    guide_clusters,
    has_rollout_version,
    register,
    remove,
)

# Kept in the dev state folder: the password `admin` was created with (mode 0600), as Argo
# CD keeps its initial admin secret until the user changes the password.
INITIAL_ADMIN_PASSWORD = "initial-admin-password"  # noqa: S105 - a file's name
DEMO_PORT_OFFSET = 100  # the demo fleet listens on the API's port + 100 (8100 by default)


@dataclass
class Welcome:
    api_url: str
    console_url: str | None
    state_dir: Path
    postgres: str
    redis: str
    password_from_env: bool


async def announce(welcome: Welcome, api_url: str, password: str, fleet: DemoFleet | None) -> None:
    """Once everything listens: sign in as admin once, to tell whether the kept password
    still works and (with a demo fleet) to register the fleet; then print the block."""
    changed = (
        "admin's password was changed since it was first set; forgotten? "
        "`edge-platform users reset-password admin`"
    )
    demo: str | None = None
    try:
        platform = await Platform.sign_in(api_url, "admin", password)
    except DemoError:
        note = changed
        if fleet is not None:
            demo = "  demo:      not registered: it signs in as admin (set ADMIN_PASSWORD)"
    else:
        note = "the ADMIN_PASSWORD you set" if welcome.password_from_env else password
        try:
            if fleet is not None:
                demo = await register_fleet(platform, fleet)
        except DemoError as exc:
            demo = f"  demo:      not registered: {exc}"
        finally:
            await platform.close()
    print(welcome_block(welcome, note, demo), flush=True)


@contextlib.asynccontextmanager
async def demo_fleet(host: str, port: int) -> AsyncIterator[DemoFleet]:
    fleet = await DemoFleet(guide_clusters()).start(host, port)
    try:
        yield fleet
    finally:
        await fleet.stop()


async def register_fleet(platform: Platform, fleet: DemoFleet) -> str:
    """Register the fleet with the platform; a line or two for the welcome block."""
    created = await register(platform, fleet)
    clusters = ", ".join(fleet.clusters)
    fresh = f" (created: {len(created)} objects)" if created else " (already registered)"
    catalog = (
        ""
        if await has_rollout_version(platform)
        else f"\n             the catalog lacks {VERSION}, which the README's rollout deploys: "
        "start without BUILTIN_CHARTS, or with it listing monitoring-stack:1.5.0"
    )
    return (
        f"  demo:      {len(fleet.clusters)} emulated edge clusters at "
        f"https://{fleet.host}:{fleet.port}{fresh}\n"
        f"             {clusters}\n"
        f"             remove them: edge-platform demo-fleet --remove{catalog}"
    )


def welcome_block(welcome: Welcome, password_note: str, demo: str | None) -> str:
    """Printed once everything listens, after the start-up logs: where things are."""
    rule = "=" * 78
    lines = [
        "",
        rule,
        "  Edge Platform is running",
        f"  API:       {welcome.api_url}/api/v1   (docs: {welcome.api_url}/docs)",
    ]
    if welcome.console_url:
        lines.append(f"  console:   {welcome.console_url}/")
    lines += [
        f"  sign in:   user admin, password {password_note}",
        f"  state:     {welcome.state_dir}",
        f"             (postgres: {welcome.postgres}, redis: {welcome.redis})",
    ]
    if demo:
        lines += [demo, "  next:      the README's first screen rolls the guide's app out to them"]
    lines += ["  Ctrl-C stops everything.", rule, ""]
    return "\n".join(lines)


async def run_demo_fleet(api_url: str, host: str, port: int, state_dir: Path) -> int:
    """`edge-platform demo-fleet`: serve the emulated clusters and register them with the
    platform at `api_url`, until Ctrl-C."""
    password = _admin_password(state_dir)
    async with demo_fleet(host, port) as fleet:
        try:
            platform = await Platform.sign_in(api_url, "admin", password)
            try:
                print(await register_fleet(platform, fleet), flush=True)
            finally:
                await platform.close()
        except DemoError as exc:
            print(f"edge-platform demo-fleet: {exc}", flush=True)
            return 1
        print("  serving them until Ctrl-C", flush=True)
        await asyncio.Event().wait()
    return 0


async def remove_demo_fleet(api_url: str, state_dir: Path) -> int:
    try:
        platform = await Platform.sign_in(api_url, "admin", _admin_password(state_dir))
        try:
            removed, kept = await remove(platform)
        finally:
            await platform.close()
    except DemoError as exc:
        print(f"edge-platform demo-fleet: {exc}", flush=True)
        return 1
    print("removed: " + (", ".join(removed) if removed else "nothing (no demo clusters)"))
    for line in kept:
        print(f"kept: {line}")
    print("kept: workspace team-a (delete it if unwanted)")
    return 1 if kept else 0


def _admin_password(state_dir: Path) -> str:
    """ADMIN_PASSWORD, else the one `dev` keeps in its state folder."""
    if os.environ.get("ADMIN_PASSWORD"):
        return os.environ["ADMIN_PASSWORD"]
    kept = state_dir.expanduser() / INITIAL_ADMIN_PASSWORD
    if kept.exists():
        return kept.read_text().strip()
    raise SystemExit(
        "edge-platform demo-fleet: set ADMIN_PASSWORD to the admin's password (or run it "
        f"beside `edge-platform dev`, whose state folder {state_dir} keeps it)"
    )

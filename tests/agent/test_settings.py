"""`edge-platform agent`: where each setting comes from (command line, then environment, then
the mounted Secret directory), what is refused and how it is said, and the command run as a
real process with none of the platform's settings, joining, serving and stopping on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.agent.settings import AgentSettings, JoinTokenSource, load_agent_settings
from app.agent.store import StoredCredential
from app.cli import build_parser, main
from app.config import ConfigError
from tests.agent.support import RecordingEdge, TestPlatform

# The platform's own settings: the agent must start without any of them.
PLATFORM_SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_ADDRESSES",
    "JWT_SECRET",
    "ENCRYPTION_KEY",
    "EDGE_MODE",
    "API_SERVER_ARGS",
)


def agent_args(*flags: str) -> object:
    return build_parser().parse_args(["agent", *flags])


@pytest.fixture
def secret_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "edge-agent"
    folder.mkdir()
    (folder / "platformUrl").write_text("https://file.example\n")
    (folder / "token").write_text("file-token\n")
    (folder / "platformCA").write_text("-----BEGIN CERTIFICATE-----\n")
    return folder


def test_the_command_line_wins_over_the_environment_which_wins_over_files(
    secret_dir: Path, tmp_path: Path
) -> None:
    env_ca = tmp_path / "env-ca.pem"
    env_ca.write_text("pem")
    cli_ca = tmp_path / "cli-ca.pem"
    cli_ca.write_text("pem")
    environ = {
        "EDGE_AGENT_SECRET_DIR": str(secret_dir),
        "EDGE_AGENT_PLATFORM_URL": "https://env.example",
        "EDGE_AGENT_TOKEN": "env-token",
        "EDGE_AGENT_PLATFORM_CA_FILE": str(env_ca),
        "KUBECONFIG": "/env/kubeconfig",
        "EDGE_AGENT_LOG_LEVEL": "warning",
        "POD_NAMESPACE": "edge-system",
    }
    flags = (
        "--platform-url",
        "https://cli.example/",
        "--token",
        "cli-token",
        "--platform-ca-file",
        str(cli_ca),
        "--kubeconfig",
        "/cli/kubeconfig",
        "--log-level",
        "debug",
        "--credential-secret",
        "cli-secret",
    )
    settings = load_agent_settings(agent_args(*flags), environ)  # type: ignore[arg-type]
    assert settings.platform_url == "https://cli.example"
    assert settings.join_token.current() == "cli-token"
    assert settings.platform_ca_file == cli_ca
    assert settings.kubeconfig == "/cli/kubeconfig"
    assert settings.log_level == "debug"
    assert settings.credential_secret == "cli-secret"
    assert settings.namespace == "edge-system"

    settings = load_agent_settings(agent_args(), environ)  # type: ignore[arg-type]
    assert settings.platform_url == "https://env.example"
    assert settings.join_token.current() == "env-token"
    assert settings.platform_ca_file == env_ca
    assert settings.kubeconfig == "/env/kubeconfig"
    assert settings.log_level == "warning"
    assert settings.credential_secret == "edge-agent-credential"

    settings = load_agent_settings(
        agent_args(),  # type: ignore[arg-type]
        {"EDGE_AGENT_SECRET_DIR": str(secret_dir)},
    )
    assert settings.platform_url == "https://file.example"
    assert settings.join_token.current() == "file-token"
    assert settings.platform_ca_file == secret_dir / "platformCA"
    assert settings.kubeconfig is None
    assert settings.log_level == "info"


def test_a_token_in_the_secret_directory_is_read_again_when_needed(secret_dir: Path) -> None:
    settings = load_agent_settings(agent_args("--secret-dir", str(secret_dir)), {})  # type: ignore[arg-type]
    assert settings.join_token.current() == "file-token"
    (secret_dir / "token").write_text("a-new-token")
    assert settings.join_token.current() == "a-new-token"
    (secret_dir / "token").unlink()
    assert settings.join_token.current() is None
    (secret_dir / "token").write_text("has spaces in it")
    assert settings.join_token.current() is None  # refused (and said in the log), not sent


def test_secrets_do_not_show_in_representations(tmp_path: Path) -> None:
    settings = AgentSettings(
        platform_url="https://p.example", join_token=JoinTokenSource(value="the-join-token")
    )
    assert "the-join-token" not in repr(settings)
    credential = StoredCredential("the-credential", "edge-1", datetime.now(UTC), 60, "digest")
    assert "the-credential" not in repr(credential)


def test_addresses_and_tunnel_urls() -> None:
    def settings(url: str) -> AgentSettings:
        return load_agent_settings(agent_args("--platform-url", url), {})  # type: ignore[arg-type]

    assert settings("https://p.example").tunnel_url == "wss://p.example/api/v1/agent/tunnel"
    assert (
        settings("http://127.0.0.1:8000/").tunnel_url == "ws://127.0.0.1:8000/api/v1/agent/tunnel"
    )
    prefixed = settings("https://p.example/edge/")
    assert prefixed.tunnel_url == "wss://p.example/edge/api/v1/agent/tunnel"
    assert (
        prefixed.platform_endpoint("/api/v1/agent/join")
        == "https://p.example/edge/api/v1/agent/join"
    )
    for bad, said in (
        ("ftp://p.example", "is not an http(s) URL"),
        ("p.example", "is not an http(s) URL"),
        ("https://user:pw@p.example", "must not hold credentials"),
        ("https://p.example/?token=x", "must not have a query"),
        ("https://p.example:99999", "invalid port"),
    ):
        with pytest.raises(ConfigError, match=said.replace("(", r"\(").replace(")", r"\)")):
            settings(bad)


def test_what_the_command_refuses_is_said_with_exit_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("EDGE_AGENT_PLATFORM_URL", "EDGE_AGENT_SECRET_DIR"):
        monkeypatch.delenv(name, raising=False)
    url = ["--platform-url", "https://p.example"]
    cases = [
        ([], "the platform's address is required"),
        ([*url, "--credential-secret", "Not_A_Name"], "not a valid Secret name"),
        ([*url, "--secret-dir", str(tmp_path / "absent")], "does not exist"),
        ([*url, "--platform-ca-file", str(tmp_path / "absent.pem")], "does not exist"),
        ([*url, "--kubeconfig", str(tmp_path / "absent")], "kubeconfig"),
    ]
    for flags, said in cases:
        assert main(["agent", *flags]) == 2, flags
        error = capsys.readouterr().err
        assert error.startswith("edge-platform: configuration error: "), error
        assert said in error, (flags, error)


async def test_the_command_as_a_process(
    tmp_path: Path, platform: TestPlatform, edge: RecordingEdge, kubeconfig: Path
) -> None:
    token = platform.issue_token("edge-1")
    environ = {k: v for k, v in os.environ.items() if k not in PLATFORM_SETTINGS}
    environ |= {"EDGE_AGENT_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "agent",
        "--platform-url",
        platform.url,
        "--kubeconfig",
        str(kubeconfig),
        "--state-file",
        str(tmp_path / "credential.json"),
        "--log-level",
        "debug",
        env=environ,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        connection = await platform.next_connection(within=30)
        answer = await connection.request("GET", "/version")
        assert answer.status == 200
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.strip()]
    messages = [line["message"] for line in lines]
    assert any(m.startswith("joined the platform as cluster edge-1") for m in messages)
    assert "edge agent stopped" in messages
    assert await asyncio.wait_for(connection.ended.wait(), 5) is True
    assert connection.websocket.close_code == 1001  # going away, said to the platform
    logged = stderr.decode()
    assert token not in logged
    assert connection.credential not in logged

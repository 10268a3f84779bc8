"""Operator settings: the deployment guide's names and forms are accepted exactly."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from app.config import (
    ConfigError,
    Mode,
    Settings,
    apply_server_flags,
    load_settings,
    parse_duration,
    translate_database_url,
)

GUIDE_ARGS = """
  --log-level=info
  --metrics-bind-address=0.0.0.0:8080
  --health-probe-bind-address=0.0.0.0:8081
  --leader-elect
  --leader-elect-lease-duration=15s
  --leader-elect-renew-deadline=10s
  --leader-elect-retry-period=2s
"""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), ("2", 2), ("1.5s", 1.5)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "15x", "s15", "-1s", "1m 30s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_environment_names_of_the_guide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "DATABASE_URL",
        "postgres://edge_platform:password@postgres-ha:5432/edge_platform?sslmode=disable",
    )
    monkeypatch.setenv(
        "REDIS_ADDRESSES", "redis-cluster-1:6379,redis-cluster-2:6379,redis-cluster-3:6379"
    )
    monkeypatch.setenv("JWT_SECRET", "your-jwt-secret-key")
    monkeypatch.setenv("OAUTH_CLIENT_ID", "edge-console")
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "edge-secret")
    monkeypatch.setenv("OAUTH_ISSUER", "https://oauth.example.com/")
    monkeypatch.setenv("CLUSTER_UNREACHABLE_AFTER", "1m")
    settings = load_settings()
    assert settings.redis_addresses == [
        "redis-cluster-1:6379",
        "redis-cluster-2:6379",
        "redis-cluster-3:6379",
    ]
    assert settings.oauth_issuer == "https://oauth.example.com"
    assert settings.cluster_unreachable_after == 60
    assert settings.database.sqlalchemy_url == (
        "postgresql+asyncpg://edge_platform:password@postgres-ha:5432/edge_platform"
    )
    assert settings.database.ssl is False
    assert settings.edge_mode is Mode.minimal


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_ADDRESSES", "redis-1:6379,redis-2")
    with pytest.raises(ConfigError, match="REDIS_ADDRESSES"):
        load_settings()
    monkeypatch.delenv("REDIS_ADDRESSES")
    monkeypatch.setenv("DRIFT_CHECK_INTERVAL", "soon")
    with pytest.raises(ConfigError, match="DRIFT_CHECK_INTERVAL"):
        load_settings()


def test_api_server_args_block_of_the_guide() -> None:
    settings = apply_server_flags(Settings(api_server_args=GUIDE_ARGS), [])
    assert settings.log_level == "info"
    assert settings.metrics_bind_address == "0.0.0.0:8080"
    assert settings.health_probe_bind_address == "0.0.0.0:8081"
    assert settings.leader_elect is True
    assert settings.leader_elect_lease_duration == 15
    assert settings.leader_elect_renew_deadline == 10
    assert settings.leader_elect_retry_period == 2


def test_command_line_flags_win_over_api_server_args() -> None:
    settings = apply_server_flags(
        Settings(api_server_args=GUIDE_ARGS),
        ["--leader-elect=false", "--log-level", "debug", "--port", "9000"],
    )
    assert settings.leader_elect is False
    assert settings.log_level == "debug"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ("--no-such-flag", "unknown flags"),
        ("--leader-elect-lease-duration=forever", "duration"),
        ("--log-level=loud", "log_level"),
        ("--metrics-bind-address=nowhere", "host:port"),
    ],
)
def test_bad_api_server_args(args: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        apply_server_flags(Settings(api_server_args=args), [])


def test_sslmodes_become_asyncpg_ssl_arguments(tmp_path: Path) -> None:
    base = "postgres://u:p@db:5432/edge?sslmode="
    assert translate_database_url(base + "disable").ssl is False
    assert translate_database_url(base + "prefer").ssl == "prefer"
    assert translate_database_url(base + "allow").ssl == "allow"
    assert translate_database_url("postgres://u@db/edge").ssl is None

    require = translate_database_url(base + "require").ssl
    assert isinstance(require, ssl.SSLContext)
    assert require.verify_mode == ssl.CERT_NONE
    assert require.check_hostname is False

    ca = _self_signed_ca(tmp_path)
    verify_ca = translate_database_url(f"{base}verify-ca&sslrootcert={ca}").ssl
    assert isinstance(verify_ca, ssl.SSLContext)
    assert verify_ca.verify_mode == ssl.CERT_REQUIRED
    assert verify_ca.check_hostname is False

    full = translate_database_url(f"{base}verify-full&sslrootcert={ca}&application_name=x")
    assert isinstance(full.ssl, ssl.SSLContext)
    assert full.ssl.check_hostname is True
    assert full.ssl.verify_mode == ssl.CERT_REQUIRED
    # libpq's ssl parameters are removed; others are kept for asyncpg.
    assert full.sqlalchemy_url == "postgresql+asyncpg://u:p@db:5432/edge?application_name=x"


def test_bad_database_urls() -> None:
    with pytest.raises(ConfigError, match="sslmode"):
        translate_database_url("postgres://db/edge?sslmode=always")
    with pytest.raises(ConfigError, match="scheme"):
        translate_database_url("mysql://db/edge")


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"jwt_secret": "your-jwt-secret-key"}, "JWT_SECRET is the documented placeholder"),
        ({"jwt_secret": "short"}, "JWT_SECRET is 5 bytes"),
        ({"jwt_secret": None}, "JWT_SECRET must be set"),
        ({"oauth_client_secret": "edge-secret"}, "OAUTH_CLIENT_SECRET is the documented"),
        ({"encryption_key": "x" * 10}, "ENCRYPTION_KEY is 10 bytes"),
        ({"database_url": None}, "DATABASE_URL must be set"),
        ({"redis_addresses": []}, "REDIS_ADDRESSES or REDIS_URL"),
        ({"admin_password": "P@88w0rd"}, "ADMIN_PASSWORD is a well-known or short password"),
        ({"admin_password": "admin"}, "ADMIN_PASSWORD"),
        ({"admin_password": "short-pw"}, "ADMIN_PASSWORD"),
    ],
)
def test_production_refuses_placeholder_and_short_secrets(
    overrides: dict[str, object], fragment: str
) -> None:
    values: dict[str, object] = {
        "edge_mode": "production",
        "jwt_secret": "j" * 40,
        "encryption_key": "e" * 40,
        "database_url": "postgres://db/edge",
        "redis_addresses": ["r1:6379"],
    }
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=fragment):
        settings.check_production_secrets()


def test_minimal_mode_accepts_placeholders() -> None:
    Settings(jwt_secret="your-jwt-secret-key").check_production_secrets()


def _self_signed_ca(tmp_path: Path) -> Path:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path

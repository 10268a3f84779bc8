"""SSRF guard for cluster API addresses.

Checked when a kubeconfig is stored (literal addresses, and host names that resolve) and again
on the resolved address each time the controller connects, so DNS cannot be used to point a
stored name at a forbidden address later.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

# Never reachable from the management plane, whatever the settings: cloud metadata services
# and link-local addresses.
ALWAYS_FORBIDDEN = [
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "0.0.0.0/8",
        "::/128",
        "224.0.0.0/4",
        "ff00::/8",
    )
]
# Refused unless ALLOW_PRIVATE_CLUSTER_ENDPOINTS (tests, on-premise installs).
PRIVATE = [
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
    )
]


class EndpointRefused(ValueError):
    pass


def check_address(address: str, *, allow_private: bool) -> None:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in ALWAYS_FORBIDDEN):
        raise EndpointRefused(f"{ip} is a link-local or cloud metadata address and never allowed")
    if not allow_private and any(ip in network for network in PRIVATE):
        raise EndpointRefused(
            f"{ip} is a loopback or private address; set ALLOW_PRIVATE_CLUSTER_ENDPOINTS=true "
            "to allow it"
        )


def check_server_url(url: str, *, allow_private: bool, allow_insecure: bool) -> tuple[str, int]:
    """Validate a cluster API URL's form and literal address; return (host, port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise EndpointRefused(f"server {url!r}: only https:// cluster API addresses are accepted")
    if parts.scheme == "http" and not allow_insecure:
        raise EndpointRefused(
            f"server {url!r}: http:// is refused; use https or set "
            "ALLOW_INSECURE_CLUSTER_ENDPOINTS=true"
        )
    if not parts.hostname:
        raise EndpointRefused(f"server {url!r} has no host")
    if parts.username or parts.password:
        raise EndpointRefused("server URL must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise EndpointRefused(f"server {url!r} has an invalid port") from None
    host = parts.hostname
    try:
        check_address(host, allow_private=allow_private)
    except ValueError as exc:
        if isinstance(exc, EndpointRefused):
            raise
        # A name, not an address: it is checked on what it resolves to.
    return host, port


def resolve_and_check(host: str, port: int, *, allow_private: bool) -> list[str]:
    """Resolve `host` and refuse it if any address is forbidden (blocking; run in a thread)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EndpointRefused(f"cannot resolve {host!r}: {exc}") from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    for address in addresses:
        check_address(address, allow_private=allow_private)
    return addresses

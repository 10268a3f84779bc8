"""SSRF guard for cluster API addresses.

Literal addresses are checked when a kubeconfig is stored and again when the controller builds
its client. Host names are checked on what they resolve to by the resolver of the very
connection that uses the answer (`CheckedResolver`): a check on a lookup of its own would let a
name answer a public address to the check and a forbidden one to the connection (DNS
rebinding), and a kept client resolves again for every new connection.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

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
    check_host(host, allow_private=allow_private)
    return host, port


def check_host(host: str, *, allow_private: bool) -> None:
    """Refuse `host` if it is a forbidden literal address; a name passes here (it is checked on
    what it resolves to, by `CheckedResolver`)."""
    try:
        check_address(host, allow_private=allow_private)
    except EndpointRefused:
        raise
    except ValueError:
        pass  # a name, not an address


class CheckedResolver(AbstractResolver):
    """The resolver of the controller's connections to clusters: it resolves a name once (as
    the system does, /etc/hosts included), refuses the name if any address it resolves to is
    forbidden, and hands the connector exactly the addresses it checked. TLS is still verified
    against the name in the URL: the connector takes that from the request, not from here."""

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._system = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._system.resolve(host, port, family)
        for answer in answers:
            try:
                check_address(answer["host"], allow_private=self._allow_private)
            except ValueError as exc:  # EndpointRefused, or an address that does not parse
                raise EndpointRefused(f"{host!r} resolves to a refused address: {exc}") from None
        return answers

    async def close(self) -> None:
        await self._system.close()

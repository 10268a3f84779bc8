"""Whose address a request to the API comes from, when the console passes one on.

Every sign-in through the console reaches the API's token endpoint from the console's own
address, and that endpoint counts requests per address: without more, a few dozen wrong
passwords typed into the console by one person would lock every console user out. So the
console names its browser's address in a header with a proof, an HMAC under a secret only the
API and the console know (CONSOLE_FORWARDING_SECRET), of the address and the time. The API
believes the header only when the proof verifies; anyone else who sends it is counted by their
own address, so it helps neither to evade a limit nor to push someone else into one. The
secret itself never travels, and a proof seen on the way is good only for that address and
only for PROOF_LIFETIME.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import time

from starlette.requests import Request

ADDRESS_HEADER = "X-Edge-Client-Address"
PROOF_HEADER = "X-Edge-Client-Proof"
# How far the time in a proof may lie from the API's clock: room for the skew between the
# console's host and the API's, short enough that a captured proof soon expires.
PROOF_LIFETIME = 300
_PURPOSE = b"edge-client-address/v1"
_WARN_EVERY = 60.0  # anyone can send the header: a mismatch is logged at most this often

logger = logging.getLogger(__name__)
_last_warning = float("-inf")


def _mac(secret: str, address: str, issued: int) -> str:
    message = b"\n".join((_PURPOSE, str(issued).encode(), address.encode()))
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def forwarding_headers(secret: str, address: str, now: float | None = None) -> dict[str, str]:
    """The headers with which the console names the browser `address` it speaks for."""
    issued = int(time.time() if now is None else now)
    return {ADDRESS_HEADER: address, PROOF_HEADER: f"{issued}.{_mac(secret, address, issued)}"}


def vouched_address(
    secret: str | None, address: str | None, proof: str | None, now: float
) -> str | None:
    """`address` when `proof` shows that the holder of `secret` named it lately, else None."""
    if not secret or not address or not proof:
        return None
    issued_text, _, mac = proof.partition(".")
    if not (issued_text.isascii() and issued_text.isdigit()):
        return None
    issued = int(issued_text)
    if not hmac.compare_digest(mac.encode(), _mac(secret, address, issued).encode()):
        return None
    if abs(now - issued) > PROOF_LIFETIME:
        _warn(
            f"a proof of {ADDRESS_HEADER} is {int(now - issued)}s old: are the console's and "
            "the API's clocks apart?"
        )
        return None
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    return address


def client_address(request: Request) -> str | None:
    """The address limits and audit records count this request by: the browser's that the
    console vouches for, otherwise the connection's."""
    peer = request.client.host if request.client else None
    claimed = request.headers.get(ADDRESS_HEADER)
    if claimed is None:
        return peer
    secret: str | None = request.app.state.settings.console_forwarding_secret
    vouched = vouched_address(secret, claimed, request.headers.get(PROOF_HEADER), time.time())
    if vouched is not None:
        return vouched
    _warn(
        f"{ADDRESS_HEADER} from {peer} without a valid proof, counted by its own address "
        + (
            "(CONSOLE_FORWARDING_SECRET is not set on the API)"
            if not secret
            else "(a console with another CONSOLE_FORWARDING_SECRET, or not a console)"
        )
    )
    return peer


def _warn(message: str) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= _WARN_EVERY:
        _last_warning = now
        logger.warning(message)

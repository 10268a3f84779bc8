"""The console's session: the user's OAuth tokens sealed (AES-GCM) into an HttpOnly cookie.

Nothing is stored server-side, so any number of console replicas serve the same browser and a
restart signs nobody out. The browser never sees the tokens in the clear, and scripts cannot
read the cookie at all.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from dataclasses import asdict, dataclass

from app.crypto import DecryptionError, Sealed, SecretBox

COOKIE = "edge_console"
LOGIN_CSRF_COOKIE = "edge_console_login"  # double-submit token of the sign-in form
OIDC_STATE_COOKIE = "edge_console_oidc"  # the external login this browser began
WORKSPACE_COOKIE = "edge_console_ws"  # the workspace last chosen (a preference, not a secret)
# The join-token forms this browser has used (random tickets, never a token): a reload that
# sends one again is not a second join token (app.py, issue_join_token).
ISSUED_COOKIE = "edge_console_issued"
_PURPOSE = "console-session/v1"


@dataclass
class UserSession:
    username: str
    access_token: str
    refresh_token: str | None
    expires_at: float  # when the access token expires (epoch seconds)
    lifetime: float  # the access token's lifetime: refreshes start a fraction of it early
    csrf: str  # every form of this session carries it

    @classmethod
    def start(cls, username: str, access: str, refresh: str | None, lifetime: float) -> UserSession:
        return cls(
            username, access, refresh, time.time() + lifetime, lifetime, secrets.token_urlsafe(24)
        )

    def tokens(self) -> tuple[str, str | None]:
        return self.access_token, self.refresh_token


class SessionSealer:
    def __init__(self, secret: str) -> None:
        self._box = SecretBox(secret)

    def seal(self, session: UserSession) -> str:
        sealed = self._box.seal(json.dumps(asdict(session)).encode(), _PURPOSE)
        # Unpadded: a cookie value with "=" would be sent quoted.
        body = base64.urlsafe_b64encode(sealed.ciphertext).decode().rstrip("=")
        return f"{sealed.key_id}.{body}"

    def open(self, cookie: str | None) -> UserSession | None:
        """The session in `cookie`, or None when absent, tampered, or sealed with another key."""
        if not cookie:
            return None
        found_id, _, body = cookie.partition(".")
        try:
            ciphertext = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plaintext = self._box.open(Sealed(found_id, ciphertext), _PURPOSE)
            return UserSession(**json.loads(plaintext))
        except (DecryptionError, binascii.Error, ValueError, TypeError):
            return None

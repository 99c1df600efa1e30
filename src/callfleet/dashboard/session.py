"""The dashboard's session cookie and its CSRF token.

The cookie holds the signed-in API key **encrypted** (Fernet: AES-128-CBC +
HMAC-SHA256) inside an itsdangerous-signed, timestamped payload, both under keys
derived from the server's secret (`CALLFLEET_SECRET_KEY`, or the data directory's
`secret.key`). Why in the cookie rather than a server-side session row: the
dashboard is a client of the public API and owns no table, the cookie works on
every API process that shares the secret, and the key is never readable from the
browser (HttpOnly) nor from the cookie's bytes (encrypted). A session ends when the
cookie is cleared (Sign out), after `MAX_AGE_S`, or when the key is revoked (every
page then answers 401 from the API and goes back to sign-in).
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = ["COOKIE", "MAX_AGE_S", "Session", "SessionCodec"]

COOKIE = "callfleet_session"
MAX_AGE_S = 12 * 3600


def _derive(material: str, purpose: str) -> bytes:
    return hmac.new(material.encode(), f"callfleet dashboard {purpose}".encode(), "sha256").digest()


@dataclass(frozen=True)
class Session:
    api_key: str
    csrf: str


class SessionCodec:
    """Turns a `Session` into a cookie value and back; None for anything not ours."""

    def __init__(self, secret_material: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(secret_material, "encryption")))
        self._signer = URLSafeTimedSerializer(
            _derive(secret_material, "signing"), salt="callfleet-dashboard-session"
        )

    def new(self, api_key: str) -> Session:
        return Session(api_key=api_key, csrf=secrets.token_urlsafe(32))

    def dump(self, session: Session) -> str:
        sealed = self._fernet.encrypt(session.api_key.encode()).decode()
        return self._signer.dumps({"k": sealed, "c": session.csrf})

    def load(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            data = self._signer.loads(cookie, max_age=MAX_AGE_S)
            key = self._fernet.decrypt(str(data["k"]).encode(), ttl=MAX_AGE_S).decode()
        except (BadSignature, InvalidToken, KeyError, TypeError, ValueError):
            return None
        return Session(api_key=key, csrf=str(data["c"]))

    @staticmethod
    def csrf_ok(session: Session, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())

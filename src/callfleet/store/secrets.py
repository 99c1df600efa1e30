"""Encryption at rest for the secrets we must be able to read back (trunk passwords).

Passwords are Fernet tokens (AES-128-CBC + HMAC-SHA256) under a key derived from
`CALLFLEET_SECRET_KEY`, or, on the embedded default, from a random key created once
in the data directory with owner-only permissions.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from callfleet.config import Settings

__all__ = ["SecretBox", "UnreadableSecret"]


class UnreadableSecret(RuntimeError):
    """A stored secret cannot be decrypted with this key."""


class SecretBox:
    def __init__(self, key_material: str) -> None:
        digest = hashlib.sha256(key_material.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        if settings.secret_key:
            return cls(settings.secret_key)
        path = Path(settings.data_dir) / "secret.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process created it first
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(32))
        return cls(path.read_text().strip())

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise UnreadableSecret(
                "a stored trunk password cannot be decrypted: CALLFLEET_SECRET_KEY differs "
                "from the key it was saved with; restore that key or set the password again"
            ) from None

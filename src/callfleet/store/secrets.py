"""Encryption at rest for the secrets we must be able to read back (trunk passwords).

Passwords are Fernet tokens (AES-128-CBC + HMAC-SHA256) under a key derived from
`CALLFLEET_SECRET_KEY` (at least 32 characters, checked by `Settings`), or, on the
embedded default, from a random key created once in the data directory with owner-only
permissions. Several processes may start at once on one data directory: each writes
a whole key to a private temporary file and links it into place, which succeeds for
exactly one; the others read the winner's key, never a half-written file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from callfleet.config import Settings

__all__ = ["SecretBox", "UnreadableSecret", "private_dir"]


class UnreadableSecret(RuntimeError):
    """A stored secret cannot be decrypted with this key."""


class SecretBox:
    def __init__(self, key_material: str) -> None:
        digest = hashlib.sha256(key_material.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))
        self._hash_key = hashlib.sha256(b"callfleet-fingerprint:" + digest).digest()

    def fingerprint(self, text: str) -> str:
        """A keyed hash of `text` (hex): the same text gives the same value under this
        key, and without the key a phone number cannot be found from it by trying all."""
        return hmac.new(self._hash_key, text.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        if settings.secret_key:
            return cls(settings.secret_key.get_secret_value())
        data_dir = Path(settings.data_dir)
        private_dir(data_dir)
        path = data_dir / "secret.key"
        if not path.exists():
            _create_key_file(path)
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


def private_dir(path: Path) -> None:
    """Make callfleet's data directory, or make an existing one, owner-only (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)


def _create_key_file(path: Path) -> None:
    """Write a new key to a private temporary file, then link it into place: the link
    fails if another process got there first, whose whole key then stays."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".secret.key.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: keep its key
            os.link(temp, path)
    finally:
        os.unlink(temp)

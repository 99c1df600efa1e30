"""The format of a webhook signing secret: `whsec_` and the base64 of 32 random bytes.

It lives below both `store` (which gives each new account one) and `webhooks` (which
signs with it), so neither package has to import the other for it.
"""

from __future__ import annotations

import base64
import secrets
from typing import Final

__all__ = ["SECRET_BYTES", "SECRET_PREFIX", "new_secret"]

SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32


def new_secret() -> str:
    """Return a fresh signing secret: `whsec_` followed by the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")

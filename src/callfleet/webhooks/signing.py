"""Signing and verifying webhook messages per the Standard Webhooks scheme.

Every webhook we send carries `webhook-id`, `webhook-timestamp` (unix seconds) and
`webhook-signature` headers; the signature is `v1,` followed by the base64 of an
HMAC-SHA256 over `"{webhook-id}.{webhook-timestamp}.{raw body}"`, keyed with the
base64-decoded part of a `whsec_…` secret (https://www.standardwebhooks.com/). Receivers
can therefore check our deliveries with any Standard Webhooks library; `verify` here is the
same check, written for our own tests and for users who would rather not add a dependency.
It compares in constant time, accepts any one of several space-separated signatures (so a
sender can rotate keys) and rejects timestamps more than `tolerance_s` away from now in
either direction, which bounds replays.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from typing import Final

from callfleet.domain.webhook_secret import SECRET_PREFIX, new_secret

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "SECRET_PREFIX",
    "USER_AGENT",
    "InvalidSignature",
    "new_secret",
    "sign",
    "signed_headers",
    "verify",
]

USER_AGENT: Final = "callfleet-webhooks/0.1"
DEFAULT_TOLERANCE_S: Final = 300
_SIGNATURE_VERSION: Final = "v1"
_TIMESTAMP_RE: Final = re.compile(r"[0-9]{1,15}")


class InvalidSignature(Exception):
    """A webhook message failed verification: missing headers, stale timestamp or no match."""


def _secret_key(secret: str) -> bytes:
    """Decode a `whsec_…` secret (the prefix is optional) into the HMAC key bytes."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    # Some senders publish unpadded base64; restore the padding before a strict decode.
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret is not valid base64 after the 'whsec_' prefix") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _signature_bytes(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed_content = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed_content, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` value (`v1,<base64>`) for one message.

    `body` must be the exact bytes that go on the wire; a re-serialised JSON body would
    not verify.
    """
    if not msg_id:
        raise ValueError("msg_id must not be empty")
    digest = _signature_bytes(_secret_key(secret), msg_id, timestamp, body)
    return f"{_SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signed_headers(
    secret: str | Sequence[str], msg_id: str, body: bytes, now: int | None = None
) -> dict[str, str]:
    """Return the HTTP headers for delivering `body` as message `msg_id`.

    The three Standard Webhooks headers plus `content-type: application/json` and our
    `user-agent`. `now` (unix seconds) defaults to the current time. Several secrets (while
    a rotated-out secret still signs) give one space-separated signature each, in order.
    """
    timestamp = int(time.time()) if now is None else now
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets:
        raise ValueError("at least one webhook secret is needed")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        # A plain dict is case-sensitive; httpx/starlette header maps are not.
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    if not value:
        raise InvalidSignature(f"missing {name} header")
    return value


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: int | None = None,
) -> None:
    """Check a received webhook message; raise `InvalidSignature` unless it is authentic.

    `headers` may be any mapping (header names are matched case-insensitively) and `body`
    must be the raw request body. The timestamp must lie within `tolerance_s` seconds of
    `now` (default: the current time) in either direction, and at least one of the
    space-separated `v1,` signatures must match.
    """
    msg_id = _header(headers, "webhook-id")
    timestamp_text = _header(headers, "webhook-timestamp").strip()
    signature_header = _header(headers, "webhook-signature")

    if not _TIMESTAMP_RE.fullmatch(timestamp_text):
        raise InvalidSignature("webhook-timestamp is not a whole number of unix seconds")
    timestamp = int(timestamp_text)
    current = int(time.time()) if now is None else now
    if timestamp < current - tolerance_s:
        raise InvalidSignature("message timestamp is too old")
    if timestamp > current + tolerance_s:
        raise InvalidSignature("message timestamp is too far in the future")

    expected = _signature_bytes(_secret_key(secret), msg_id, timestamp, body)
    for candidate in signature_header.split():
        version, _, encoded = candidate.partition(",")
        if version != _SIGNATURE_VERSION:
            continue  # other schemes (e.g. v1a, asymmetric) are not ours to check
        try:
            received = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, received):
            return
    raise InvalidSignature("no matching signature")

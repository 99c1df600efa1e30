"""What a user-supplied URL must look like before anything is sent to it.

Webhooks, `dynamic_data` requests and custom tools all take a URL chosen by an API
user. `check_url_syntax` is the cheap, pure check made when a request is validated:
scheme, host, no credentials, a sane port and length, no whitespace. It uses no DNS;
where the host resolves to is judged just before each request by the outbound
address guard, `callfleet.net.ssrf`, which raises the other `WebhookTargetError`s.
"""

from __future__ import annotations

from typing import ClassVar, Final
from urllib.parse import urlsplit

import httpx

__all__ = ["MAX_URL_LENGTH", "InvalidWebhookUrl", "WebhookTargetError", "check_url_syntax"]

MAX_URL_LENGTH: Final = 2048


class WebhookTargetError(Exception):
    """Base class of the errors about where a webhook is to be delivered."""

    retryable: ClassVar[bool] = False


class InvalidWebhookUrl(WebhookTargetError, ValueError):
    """The webhook URL is malformed or not allowed (scheme, host, credentials, length)."""


def check_url_syntax(url: str) -> None:
    """Raise `InvalidWebhookUrl` unless `url` is an acceptable webhook URL; no DNS is used.

    Accepted: `http` or `https`, a host, no user name or password, an optional valid
    port, at most `MAX_URL_LENGTH` characters, no whitespace or control characters.
    """
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhookUrl(f"webhook URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise InvalidWebhookUrl("webhook URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidWebhookUrl(f"webhook URL is malformed: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidWebhookUrl("webhook URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise InvalidWebhookUrl(
            "webhook URL must not contain a user name or password; "
            "authenticate deliveries by verifying the webhook-signature header"
        )
    if not parts.hostname:
        raise InvalidWebhookUrl("webhook URL has no host")
    if port == 0:
        raise InvalidWebhookUrl("webhook URL has port 0")
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidWebhookUrl(f"webhook URL is malformed: {exc}") from exc

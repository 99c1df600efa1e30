"""Outbound webhooks: signed deliveries, retried on a schedule, aimed only at safe targets.

`signing` implements the Standard Webhooks scheme (receivers verify our deliveries with any
Standard Webhooks library, or with `verify`), `ssrf` refuses URLs that resolve to loopback,
private, link-local or metadata addresses unless the operator allows private targets, and
`delivery` makes one signed attempt and says when the next one is due.
"""

from callfleet.net.ssrf import (
    InvalidWebhookUrl,
    UnresolvableTarget,
    UnsafeTarget,
    WebhookTargetError,
    check_url_syntax,
    resolve_and_check,
)
from callfleet.webhooks.delivery import (
    MAX_ATTEMPTS,
    RETRY_SCHEDULE,
    AttemptResult,
    deliver,
    new_client,
    next_delay,
)
from callfleet.webhooks.signing import (
    InvalidSignature,
    new_secret,
    sign,
    signed_headers,
    verify,
)

__all__ = [
    "MAX_ATTEMPTS",
    "RETRY_SCHEDULE",
    "AttemptResult",
    "InvalidSignature",
    "InvalidWebhookUrl",
    "UnresolvableTarget",
    "UnsafeTarget",
    "WebhookTargetError",
    "check_url_syntax",
    "deliver",
    "new_client",
    "new_secret",
    "next_delay",
    "resolve_and_check",
    "sign",
    "signed_headers",
    "verify",
]

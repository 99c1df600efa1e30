"""One webhook delivery attempt, and the schedule on which failed attempts are retried.

`deliver` makes a single signed POST and reports what happened as an `AttemptResult`; it
never raises for network trouble, so the outbox sender only has to record the result and,
if `retryable`, ask `next_delay` when to try again. Before every attempt the target is
resolved and checked by the SSRF guard, and the request is then sent to a checked address
with the original `Host` header and TLS server name, so a DNS answer that changes between
the check and the connection (DNS rebinding) cannot redirect it. Redirects are never
followed, at most 64 KB of the response is read, and each request asks the server to close
the connection, so no pooled connection pinned to one host's address is reused for another
host. The retry schedule is the one Standard Webhooks recommends, cut to about a day.

A receiver's `Retry-After` (seconds or an HTTP date) comes back as `retry_after_s`; the
sender waits that long instead of the schedule's delay, never longer than the schedule's
longest step. A 410 Gone comes back as `gone`: the sender stops retrying that delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final, cast

import httpx

from callfleet.net.ssrf import WebhookTargetError, resolve_and_check
from callfleet.webhooks.signing import signed_headers

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_ATTEMPTS",
    "MAX_RESPONSE_BYTES",
    "RETRY_SCHEDULE",
    "AttemptResult",
    "deliver",
    "new_client",
    "next_delay",
    "parse_retry_after",
]

DEFAULT_TIMEOUT_S: Final = 10.0
MAX_RESPONSE_BYTES: Final = 64 * 1024
#: Seconds to wait before attempts 2, 3, …; the first attempt is immediate.
RETRY_SCHEDULE: Final[tuple[float, ...]] = (5, 300, 1800, 7200, 18000, 36000, 36000)
MAX_ATTEMPTS: Final = len(RETRY_SCHEDULE) + 1
_JITTER: Final = 0.1
#: A host with both IPv6 and IPv4 addresses may be unreachable over one of them.
_MAX_ADDRESSES_TRIED: Final = 4


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The outcome of one delivery attempt.

    `ok` is true for a 2xx answer. `status_code` is None when no response arrived, and
    `error` then says why. `retryable` is true for every failure except a target the SSRF
    guard refused or a malformed URL. `retry_after_s` is the receiver's `Retry-After` in
    seconds from now (None without a readable one); `gone` is true for a 410, which asks
    for no more retries of this delivery.
    """

    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: int
    retryable: bool
    retry_after_s: float | None = None
    gone: bool = False


def next_delay(
    attempt_number: int, *, scale: float = 1.0, rng: random.Random | None = None
) -> float | None:
    """Return the seconds to wait after failed attempt `attempt_number` (1-based).

    None means the schedule is exhausted and the delivery has failed for good. The delay
    is `RETRY_SCHEDULE[attempt_number - 1] * scale` with ±10 % jitter drawn from `rng`
    (the module's shared generator if omitted); tests pass a small `scale` and a seeded
    `random.Random`.
    """
    if attempt_number < 1:
        raise ValueError("attempt_number starts at 1")
    if attempt_number > len(RETRY_SCHEDULE):
        return None
    uniform = rng.uniform if rng is not None else random.uniform
    return RETRY_SCHEDULE[attempt_number - 1] * scale * uniform(1 - _JITTER, 1 + _JITTER)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from `now` that a `Retry-After` value asks for (RFC 9110: delay-seconds or
    an HTTP date); None when absent or unreadable, 0 for a date in the past."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text[:12]))  # a 12-digit cap keeps the float finite
    try:
        at = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(0.0, (at - (now or datetime.now(UTC))).total_seconds())


def new_client(*, timeout_s: float = DEFAULT_TIMEOUT_S) -> httpx.AsyncClient:
    """Return an HTTP client suited to `deliver`.

    It ignores proxy environment variables (a CONNECT proxy would not carry the TLS server
    name of a pinned request) and follows no redirects.
    """
    return httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=timeout_s)


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _pinned(url: httpx.URL, address: str) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """Return the URL, extra headers and extensions that send `url` to `address`."""
    host = url.raw_host.decode("ascii")
    if host == address or "%" in address:
        # An IP literal needs no pinning; a scoped IPv6 address cannot go in a URL.
        return url, {}, {}
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return url.copy_with(host=address), {"host": url.netloc.decode("ascii")}, extensions


async def _post_once(
    client: httpx.AsyncClient,
    url: httpx.URL,
    address: str,
    headers: dict[str, str],
    body: bytes,
    timeout_s: float,
) -> tuple[int, str | None, str | None]:
    target, extra_headers, extensions = _pinned(url, address)
    async with client.stream(
        "POST",
        target,
        content=body,
        headers={**headers, **extra_headers},
        timeout=timeout_s,
        follow_redirects=False,
        extensions=extensions,
    ) as response:
        received = 0
        # aiter_raw (not aiter_bytes): the body is never decoded, so no decompression bomb;
        # aclosing: stopping early must still finalise httpx's async generator.
        raw = cast(AsyncGenerator[bytes, None], response.aiter_raw())
        async with contextlib.aclosing(raw) as chunks:
            async for chunk in chunks:
                received += len(chunk)
                if received >= MAX_RESPONSE_BYTES:
                    break
        location = response.headers.get("location")
        # The receiver chooses this text and it ends up in stored errors; keep it short.
        short = None if location is None else location[:200]
        return response.status_code, short, response.headers.get("retry-after")


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    secret: str | Sequence[str],
    msg_id: str,
    body: bytes,
    *,
    allow_private: bool,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> AttemptResult:
    """POST `body` to `url`, signed with `secret` (or each of several) as `msg_id`, once.

    Network errors, timeouts (`timeout_s` bounds the whole HTTP exchange) and non-2xx
    answers come back as a retryable failed result; a target the SSRF guard refuses comes
    back as a failure that is not retryable. Only a malformed `secret` raises
    (`ValueError`), as that is a configuration error rather than a delivery failure.
    """
    started = time.monotonic()
    headers = signed_headers(secret, msg_id, body)
    headers["connection"] = "close"
    try:
        addresses = await resolve_and_check(url, allow_private=allow_private)
    except WebhookTargetError as exc:
        return AttemptResult(False, None, str(exc), _elapsed_ms(started), exc.retryable)

    parsed = httpx.URL(url)
    error = "no address to connect to"
    try:
        async with asyncio.timeout(timeout_s):
            for address in addresses[:_MAX_ADDRESSES_TRIED]:
                try:
                    status, location, retry_after = await _post_once(
                        client, parsed, address, headers, body, timeout_s
                    )
                except httpx.ConnectError as exc:
                    error = f"could not connect to {address}: {str(exc) or type(exc).__name__}"
                    continue
                result = _from_status(status, location, started)
                return dataclasses.replace(
                    result, retry_after_s=parse_retry_after(retry_after), gone=status == 410
                )
    except (TimeoutError, httpx.TimeoutException) as exc:
        error = f"no complete response within {timeout_s:g} s ({type(exc).__name__})"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return AttemptResult(False, None, error, _elapsed_ms(started), True)


def _from_status(status: int, location: str | None, started: float) -> AttemptResult:
    if 200 <= status < 300:
        return AttemptResult(True, status, None, _elapsed_ms(started), False)
    if 300 <= status < 400:
        error = f"HTTP {status}; redirects are not followed (location: {location!r})"
    else:
        error = f"HTTP {status}"
    return AttemptResult(False, status, error, _elapsed_ms(started), True)

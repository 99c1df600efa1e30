"""The per-key API rate limit (`CALLFLEET_API_RATE_LIMIT`), on the `limits` library.

Each API key gets its own moving windows (default 50 requests a second and 2,000 a
minute); a request past any of them gets 429 in the error envelope with
`Retry-After` (whole seconds until the window lets one more through). Only
authenticated requests are counted, under a hash of the key, so unknown keys cannot
fill the table; `/healthz`, `/readyz` and `/metrics` take no key and are never
limited.

The windows live in this process's memory. That is enough for what the limit is
for: one tenant must not take a process's CPU, threads and database connections
from the others, and those are per process. With N API processes behind a load
balancer a key may reach N times the limit in total; a shared store would cost a
database write on every request, so it is not used.
"""

from __future__ import annotations

import hashlib
import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from callfleet.api.errors import ApiError

__all__ = ["KeyRateLimiter", "parse_rate_limit"]


def parse_rate_limit(value: str) -> list[RateLimitItem]:
    """`"50/second;2000/minute"` as limits; `off` (or empty) as none. ValueError if bad."""
    if value.strip().lower() in ("", "off"):
        return []
    return list(parse_many(value))


class KeyRateLimiter:
    """`check(key)` counts one request for `key`, or raises the 429 ApiError."""

    def __init__(self, spec: str) -> None:
        self.items = parse_rate_limit(spec)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, api_key: str) -> None:
        if not self.items:
            return
        who = hashlib.sha256(api_key.encode()).hexdigest()
        # Test every window first so a refused request uses up none of them.
        for item in self.items:
            if not self._limiter.test(item, who):
                self._refuse(item, who)
        for item in self.items:
            if not self._limiter.hit(item, who):
                self._refuse(item, who)

    def _refuse(self, item: RateLimitItem, who: str) -> None:
        reset = self._limiter.get_window_stats(item, who).reset_time
        retry_after = max(1, math.ceil(reset - time.time()))
        raise ApiError(
            429,
            f"Rate limit exceeded for this API key ({item}); retry after {retry_after} s, "
            "or spread the requests out (the operator sets CALLFLEET_API_RATE_LIMIT).",
            headers={"Retry-After": str(retry_after)},
        )

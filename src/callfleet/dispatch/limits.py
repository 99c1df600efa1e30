"""Calls-per-second pacing: one token bucket per caller ID.

Carriers limit how fast one trunk or caller ID may start calls (1 per second by
default at the largest one). The hopper takes a token before it admits a call.
Buckets live in the hopper's memory: only one hopper admits at a time, and a fresh
leader starting with full buckets can burst by at most one bucket's capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TokenBuckets"]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """`take(key, rate, now)` is True when a call may start now under `rate` per second."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, rate: float, now: float) -> bool:
        capacity = max(1.0, rate)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now)
        else:
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def wait_time(self, key: str, rate: float) -> float:
        """Seconds until `key` has a token again (0 if it has one)."""
        bucket = self._buckets.get(key)
        if bucket is None or bucket.tokens >= 1.0:
            return 0.0
        return (1.0 - bucket.tokens) / rate

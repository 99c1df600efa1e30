"""Voice-to-voice latency figures: what a call records and what a batch shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["batch_latency", "call_latency"]


def _pct(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank percentile `q` (0..1) of sorted values, to 0.1 ms."""
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def call_latency(samples_ms: Sequence[float]) -> dict[str, Any] | None:
    """`{"samples_ms", "p50", "p95"}` of one call's replies (None without any)."""
    if not samples_ms:
        return None
    ordered = sorted(samples_ms)
    return {
        "samples_ms": [round(x, 1) for x in samples_ms],
        "p50": _pct(ordered, 0.5),
        "p95": _pct(ordered, 0.95),
    }


def batch_latency(samples_ms: Sequence[float]) -> dict[str, Any] | None:
    """`{"p50", "p95", "replies"}` over every reply of a batch's calls (None without any)."""
    if not samples_ms:
        return None
    ordered = sorted(samples_ms)
    return {"p50": _pct(ordered, 0.5), "p95": _pct(ordered, 0.95), "replies": len(ordered)}

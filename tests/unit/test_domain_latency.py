"""Latency figures a call records and a batch shows."""

from __future__ import annotations

from callfleet.domain.latency import batch_latency, call_latency


def test_call_latency_keeps_the_samples_and_their_percentiles() -> None:
    assert call_latency([]) is None
    figures = call_latency([900.04, 1200.0, 850.0, 3000.0])
    assert figures == {"samples_ms": [900.0, 1200.0, 850.0, 3000.0], "p50": 1200.0, "p95": 3000.0}


def test_batch_latency_counts_the_replies() -> None:
    assert batch_latency([]) is None
    samples = [float(ms) for ms in range(100, 2100, 100)]  # 20 replies, 100..2000 ms
    assert batch_latency(samples) == {"p50": 1100.0, "p95": 1900.0, "replies": 20}

"""Process-wide counters of what the SIP and RTP layers drop, by reason.

A stranger's packets are dropped without an answer, so the only trace of an attack
(or of a misconfigured trunk) is a count. The counters live here, below everything
that increments them; `callfleet.metrics` exposes them in `/metrics`.
"""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["SIP_DROPS", "DropCounter"]


class DropCounter:
    """Counts by reason; safe to bump from several event loops' threads at once."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._counts[reason] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


SIP_DROPS = DropCounter()
"""SIP requests refused or dropped: from strangers, a full transaction table, ..."""

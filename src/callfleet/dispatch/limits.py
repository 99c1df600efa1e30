"""Admission limits: the process-wide live-call cap, and calls-per-second pacing.

`max_live_calls(settings)` is how many calls one process carries at once over all
accounts; the hopper admits no call beyond it (with the in-process engine the
leader's process runs every call it admits; a procrastinate worker caps itself at
min(`--concurrency`, the cap)).

Carriers limit how fast one trunk or caller ID may start calls (1 per second by
default at the largest one). The hopper takes a token before it admits a call.
Buckets live in the hopper's memory: only one hopper admits at a time, and a fresh
leader starting with full buckets can burst by at most one bucket's capacity.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from callfleet.config import Settings

__all__ = ["TokenBuckets", "default_max_live_calls", "max_live_calls"]

LOCAL_MODELS_PER_CORE = 2
"""Live calls per CPU core with the offline speech models (faster-whisper and Piper
run on this machine's CPU for every call): a 2-core machine holds about 4-5 live
calls with clear audio, so 2 per core keeps every call real-time."""
HOSTED_MODELS_PER_CORE = 25
"""Live calls per core when STT and TTS are hosted: the process only moves audio
(G.711 at 50 packets a second per call), runs VAD and the pipeline's glue."""
NO_AGENT_CAP = 10_000
"""Live calls when nobody talks on them (agent off, the simulator's fast mode, or
`simulator-nomedia`): signalling and silence only, bounded by sockets, not CPU."""
_LOCAL_PROVIDERS = {"whisper-local", "piper-local", "espeak"}


def default_max_live_calls(settings: Settings, cpus: int | None = None) -> int:
    """The cap when `CALLFLEET_MAX_LIVE_CALLS` is unset, from what a call costs here."""
    cores = max(1, cpus if cpus is not None else (os.cpu_count() or 1))
    if not settings.agent_on_calls:
        cap = NO_AGENT_CAP
    elif {settings.stt_provider, settings.tts_provider} & _LOCAL_PROVIDERS:
        cap = LOCAL_MODELS_PER_CORE * cores
    else:
        cap = HOSTED_MODELS_PER_CORE * cores
    if settings.carrier == "sip":
        # Each SIP call holds an RTP/RTCP port pair from the configured range.
        cap = min(cap, max(1, (settings.rtp_port_max - settings.rtp_port_min + 1) // 2))
    return cap


def max_live_calls(settings: Settings) -> int:
    """The live-call cap of this process: the setting, or the default above."""
    return settings.max_live_calls or default_max_live_calls(settings)


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

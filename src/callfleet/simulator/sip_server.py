"""A simulated carrier on loopback: real SIP and RTP to a phone simulator.

`SipSimulatorCarrier` is the carrier port for calls without a trunk. The pieces it
drives live in their own modules of this package: `uas.PhoneSimulator` (the SIP
server whose numbers behave like phones), `config.SimulatorConfig`, and the
records it keeps (`records.InviteRecord`, `records.SimulatedCall`); this module
re-exports them, the names the API, the worker, the CLI and the tests import.
"""

from __future__ import annotations

import asyncio
import dataclasses

from callfleet.simulator.config import SimulatorConfig
from callfleet.simulator.records import (
    ENDED_BY_CALLER,
    ENDED_BY_SIMULATOR,
    InviteRecord,
    SimulatedCall,
    normalise_number,
)
from callfleet.simulator.uas import PhoneSimulator
from callfleet.telephony.carrier import CallEvents, DialRequest, DialResult
from callfleet.telephony.sip_carrier import SipCarrier

__all__ = [
    "ENDED_BY_CALLER",
    "ENDED_BY_SIMULATOR",
    "InviteRecord",
    "PhoneSimulator",
    "SimulatedCall",
    "SimulatorConfig",
    "SipSimulatorCarrier",
    "normalise_number",
]


class SipSimulatorCarrier:
    """The carrier port for calls without a trunk: real SIP and RTP to a `PhoneSimulator`.

    The simulator starts on the first call (on a free loopback port) and every
    request is sent to it as its trunk through `sip` (a shared `SipCarrier`, or one of
    its own). `close()` stops the simulator, and the `SipCarrier` only if it owns it.
    """

    def __init__(self, config: SimulatorConfig | None = None, sip: SipCarrier | None = None):
        self.simulator = PhoneSimulator(config)
        self._sip = sip or SipCarrier()
        self._owns_sip = sip is None
        self._lock = asyncio.Lock()
        self._started = False

    def _clear_recordings(self) -> None:
        """The simulator's own WAVs, unless kept (`SimulatorConfig.keep_recordings`)."""
        config = self.simulator.config
        if config.keep_recordings or config.record_dir is None:
            return
        for wav in config.record_dir.glob("*.wav"):
            wav.unlink(missing_ok=True)

    def describe(self) -> str:
        return (
            "phone simulator over SIP and RTP (test numbers +1 NPA 555-01XX; "
            f"time scale {self.simulator.config.time_scale:g})"
        )

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        async with self._lock:
            if not self._started:
                self._clear_recordings()  # a previous run's, if it was killed
                await self.simulator.start()
                self._started = True
        routed = dataclasses.replace(request, trunk=self.simulator.trunk())
        return await self._sip.place_own_call(routed, events)

    async def close(self) -> None:
        await self.simulator.close()
        self._started = False
        self._clear_recordings()
        if self._owns_sip:
            await self._sip.close()

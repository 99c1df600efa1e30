"""Route each call to the carrier that places it: the SIP client for calls with a
trunk, the built-in carrier (the phone simulator) for calls without one."""

from __future__ import annotations

from callfleet.telephony.carrier import CallEvents, Carrier, DialRequest, DialResult

__all__ = ["CarrierRouter"]


class CarrierRouter:
    def __init__(self, builtin: Carrier, trunked: Carrier | None) -> None:
        self.builtin = builtin
        self.trunked = trunked

    def describe(self) -> str:
        if self.trunked is None:
            return self.builtin.describe()
        return f"{self.trunked.describe()} for trunks; {self.builtin.describe()} otherwise"

    async def close(self) -> None:
        await self.builtin.close()
        if self.trunked is not None:
            await self.trunked.close()

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        if request.trunk is not None and self.trunked is not None:
            return await self.trunked.place_call(request, events)
        return await self.builtin.place_call(request, events)

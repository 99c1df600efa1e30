"""Session timers (RFC 4028): keep a call alive, or end it when the peer went silent.

Whoever is the refresher sends a re-INVITE at half the interval. When we are not
the refresher we wait for the peer's refresh and end the call with BYE if it has
not come by `interval - min(32, interval / 3)` seconds (§10). `SessionTimer` only
schedules; the call supplies the refresh and expiry actions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from callfleet.telephony.sip.message import SipMessage
from callfleet.telephony.sip.uri import parse_params

__all__ = ["SessionTimer", "parse_session_expires"]

log = structlog.get_logger(__name__)


def parse_min_se(message: SipMessage) -> int | None:
    """The Min-SE of a message (a 422's floor for Session-Expires), if it has a valid one."""
    value = (message.headers.get("Min-SE") or "").split(";")[0].strip()
    return int(value) if value.isdigit() else None


def parse_session_expires(message: SipMessage) -> tuple[int, str | None] | None:
    """`Session-Expires: 1800;refresher=uac` -> (1800, "uac"); None if absent or bad."""
    value = message.headers.get("Session-Expires")
    if value is None:
        return None
    number, _, params = value.partition(";")
    if not number.strip().isdigit():
        return None
    refresher = parse_params(params).get("refresher") if params else None
    return int(number.strip()), (refresher.lower() if refresher else None)


class SessionTimer:
    def __init__(
        self,
        refresh: Callable[[], Awaitable[bool]],
        expire: Callable[[], Awaitable[None]],
    ) -> None:
        self._refresh = refresh
        self._expire = expire
        self._task: asyncio.Task[None] | None = None
        self.interval: int | None = None
        self.we_refresh = False

    def start(self, interval: int, *, we_refresh: bool) -> None:
        """(Re)start the timer; called on the 2xx and on every refresh either way."""
        self.stop()
        self.interval = interval
        self.we_refresh = we_refresh
        self._task = asyncio.create_task(self._run(interval, we_refresh))

    def stop(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self._task = None

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, interval: int, we_refresh: bool) -> None:
        if we_refresh:
            await asyncio.sleep(interval / 2)
            log.debug("sip_session_timer_refresh_due", after_s=interval / 2)
            if not await self._refresh():
                await self._expire()
        else:
            await asyncio.sleep(interval - min(32, interval / 3))
            log.info("sip_session_timer_expired_without_refresh")
            await self._expire()

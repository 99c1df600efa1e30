"""What the API process shares with its routes: settings, database, dispatcher hooks.

Routes run in worker threads; the dispatcher lives on the event loop. `Runtime`
forwards a route's nudges (new calls queued, a live call to hang up) to the loop
thread-safely. Without a dispatcher (an API-only replica) the nudges are no-ops and
the database flags do the work.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from callfleet.config import Settings
from callfleet.dispatch.service import Dispatcher
from callfleet.store.db import Database
from callfleet.webhooks.sender import WebhookSender

__all__ = ["Runtime"]


@dataclass
class Runtime:
    settings: Settings
    db: Database
    dispatcher: Dispatcher | None = None
    sender: WebhookSender | None = None
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def calls_queued(self) -> None:
        if self.dispatcher is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.dispatcher.wake)

    def hang_up(self, call_ids: list[str]) -> None:
        if self.dispatcher is None or self.loop is None:
            return
        dispatcher = self.dispatcher
        for call_id in call_ids:
            self.loop.call_soon_threadsafe(dispatcher.request_hangup, call_id)

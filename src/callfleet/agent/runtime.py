"""`AgentRuntime`: the process's agent, loaded in the background at start-up.

A carrier is built synchronously at start-up, but loading the agent's engines
(pipecat, Whisper, the Piper child process) takes seconds. `AgentRuntime` starts
that load on a thread as soon as it is created and is itself a `CallMedia`: a call
answered before the load finished waits for it; if the load failed, every call
fails the same clear way (the carrier hangs up and records the error) instead of
the process crashing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from callfleet.agent.options import ProviderSettings

if TYPE_CHECKING:
    from callfleet.agent.call_audio import CallAudio
    from callfleet.agent.engines import LocalEngines
    from callfleet.agent.session import AgentCall, AgentOutcome, PipecatAgent

__all__ = ["AgentRuntime", "AgentUnavailable"]

log = logging.getLogger(__name__)


class AgentUnavailable(RuntimeError):
    """The agent's engines could not be loaded."""


class AgentRuntime:
    def __init__(self, settings: ProviderSettings, *, allow_private_urls: bool = False) -> None:
        self.settings = settings
        self.allow_private_urls = allow_private_urls
        """Tools and `dynamic_data` may reach private addresses (as webhooks may)."""
        self._engines: LocalEngines | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="agent-load")
        self._loading: Future[PipecatAgent] = self._pool.submit(self._load)

    def _load(self) -> PipecatAgent:
        from callfleet.agent.engines import LocalEngines
        from callfleet.agent.session import PipecatAgent

        engines = LocalEngines(self.settings)
        self._engines = engines
        engines.start()
        return PipecatAgent(engines, allow_private_urls=self.allow_private_urls)

    def describe(self) -> str:
        return (
            f"agent ({self.settings.model_label}, STT {self.settings.stt}, TTS {self.settings.tts})"
        )

    async def ready(self) -> PipecatAgent:
        """The loaded agent; raises `AgentUnavailable` if it could not load."""
        try:
            return await asyncio.wrap_future(self._loading)
        except Exception as exc:
            raise AgentUnavailable(f"the AI agent could not start: {exc}") from exc

    async def run(self, call: AgentCall, audio: CallAudio, hangup: asyncio.Event) -> AgentOutcome:
        try:
            agent = await self.ready()
        except AgentUnavailable:
            audio.close()
            raise
        return await agent.run(call, audio, hangup)

    async def close(self) -> None:
        """Stop the engines (the Piper child process) once loading has settled."""
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(self._loading)
        if self._engines is not None:
            await asyncio.to_thread(self._engines.close)
        self._pool.shutdown(wait=False)

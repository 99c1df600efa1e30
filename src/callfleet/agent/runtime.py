"""`AgentRuntime`: the process's agent, loaded in the background at start-up.

A carrier is built synchronously at start-up, but loading the agent's engines
(pipecat, Whisper, the Piper child process) takes seconds. `AgentRuntime` starts
that load on a thread as soon as it is created and is itself a `CallMedia`.

The load ends with the engines warm: one transcription and one synthesis done
(the first of each costs a second or more: model pages, ONNX sessions, the voice
file). Until then `not_ready()` says why the agent cannot speak yet, and the
composition root (`wiring.py`) makes the dispatcher and `/readyz` honour it, so
no call is placed whose callee would hear the engines load. A call answered
anyway (a test that places one directly) waits for the load; if the load failed,
every call fails the same clear way (the carrier hangs up and records the error)
instead of the process crashing, and `not_ready()` keeps saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from callfleet.agent.options import ProviderSettings

if TYPE_CHECKING:
    from callfleet.agent.call_audio import CallAudio
    from callfleet.agent.engines import LocalEngines
    from callfleet.agent.options import AgentOptions
    from callfleet.agent.session import AgentCall, AgentOutcome, PipecatAgent

__all__ = ["AgentRuntime", "AgentUnavailable"]


class AgentUnavailable(RuntimeError):
    """The agent's engines could not be loaded."""


class AgentRuntime:
    def __init__(
        self,
        settings: ProviderSettings,
        *,
        allow_private_urls: bool = False,
        pipecat_log_level: str = "WARNING",
    ) -> None:
        self.settings = settings
        self.allow_private_urls = allow_private_urls
        """Tools and `dynamic_data` may reach private addresses (as webhooks may)."""
        self.pipecat_log_level = pipecat_log_level
        """`Settings.pipecat_log_level`: from which level pipecat's own records are logged."""
        self._engines: LocalEngines | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="agent-load")
        self._loading: Future[PipecatAgent] = self._pool.submit(self._load)

    def _load(self) -> PipecatAgent:
        from callfleet.agent._pipecat import forward_pipecat_logs
        from callfleet.agent.engines import LocalEngines
        from callfleet.agent.session import PipecatAgent

        forward_pipecat_logs(self.pipecat_log_level)
        engines = LocalEngines(self.settings)
        self._engines = engines
        engines.start()
        engines.warm()
        return PipecatAgent(engines, allow_private_urls=self.allow_private_urls)

    def not_ready(self) -> str | None:
        """None once the engines are loaded and warm; else why the agent cannot speak yet."""
        if not self._loading.done():
            return "the AI agent is still loading and warming its speech engines"
        failure = self._loading.exception()
        if failure is not None:
            return f"the AI agent could not start: {failure}"
        return None

    def prepare(self, options: AgentOptions) -> None:
        """Ready audio for a ringing call, once the engines are up (else nothing)."""
        if self._loading.done() and self._loading.exception() is None:
            self._loading.result().prepare(options)

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

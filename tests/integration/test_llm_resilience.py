"""The in-call LLM failing, against a real OpenAI-compatible HTTP server on loopback.

The server answers 500, or accepts the request and never answers. The agent's request
has a timeout (`CALLFLEET_LLM_TIMEOUT_S`, 10 s; 1 s here) and one retry; then it says
the fallback line, ends the call itself, and the outcome notes the error.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from tests.support.phone_line import Pause, PhoneLine, Say

from callfleet import synth
from callfleet.agent.call_audio import CallAudio
from callfleet.agent.options import AgentOptions
from callfleet.agent.session import AgentCall, AgentOutcome, PipecatAgent
from callfleet.agent.testing import EnergyVAD, FakeEngines
from callfleet.telephony.carrier import EndedBy

FALLBACK = "Sorry, our line is having trouble. We will call you back. Goodbye."


class BrokenLlm:
    """Counts requests; `mode` "500" answers 500, "stall" never answers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self.base_url = ""
        self.loop = asyncio.new_event_loop()
        self._runner: Any = None

    async def _complete(self, _request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.mode == "stall":
            await asyncio.sleep(60)
        return web.json_response({"error": {"message": "boom"}}, status=500)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"


@pytest.fixture(params=["500", "stall"])
def broken_llm(request: pytest.FixtureRequest) -> Iterator[BrokenLlm]:
    llm = BrokenLlm(request.param)
    llm.loop.run_until_complete(llm._start())
    thread = threading.Thread(target=llm.loop.run_forever, daemon=True)
    thread.start()
    yield llm
    llm.loop.call_soon_threadsafe(llm.loop.stop)
    thread.join(timeout=5)
    llm.loop.run_until_complete(llm._runner.cleanup())
    llm.loop.close()


def _converse(engines: FakeEngines, options: AgentOptions) -> tuple[AgentOutcome, float]:
    async def main() -> AgentOutcome:
        agent = PipecatAgent(engines, vad_factory=EnergyVAD)
        audio = CallAudio()
        # The callee says hello, then waits on the line (up to 40 s) for the agent.
        line = PhoneLine(audio, [Pause(0.3), Say(synth.speech_like(0.5, seed=3), "hi"), Pause(40)])
        hangup = asyncio.Event()

        async def callee() -> None:
            await line.run(linger_s=0.5)
            hangup.set()

        task = asyncio.create_task(callee())
        async with asyncio.timeout(50):
            outcome = await agent.run(AgentCall("llm-down", options, None), audio, hangup)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return outcome

    started = time.monotonic()
    outcome = asyncio.run(main())
    return outcome, time.monotonic() - started


def test_a_failing_llm_gets_one_retry_then_the_fallback_line_and_a_clean_end(
    broken_llm: BrokenLlm,
) -> None:
    engines = FakeEngines(
        stt_lines=["Hello?"],
        llm_base_url=broken_llm.base_url,
        llm_timeout_s=1.0,
        llm_fallback_line=FALLBACK,
        seconds_per_word=0.1,
    )
    options = AgentOptions(prompt="You sell roofs.", wait_for_greeting=True)
    outcome, took = _converse(engines, options)
    print(f"{broken_llm.mode}: {broken_llm.requests} requests, call ended after {took:.1f} s")
    assert broken_llm.requests == 2  # the request and one retry
    spoken = [text for tts in engines.ttss for text in tts.spoken]
    assert FALLBACK in spoken
    assert outcome.ended_by is EndedBy.ASSISTANT
    assert outcome.error is not None and "LLM" in outcome.error
    assert broken_llm.base_url not in outcome.error
    assert took < 20  # not the 40 s the callee would have waited

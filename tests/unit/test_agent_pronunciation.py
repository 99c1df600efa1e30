"""A call's `pronunciation_guide` through the agent: what text reaches the TTS.

Replacements are literal text: a replacement holding regex template syntax (`\\1`,
`\\g<0>`) is spoken as written, never expanded, and never raises.
"""

from __future__ import annotations

import asyncio

from tests.support.phone_line import Pause, PhoneLine

from callfleet.agent.call_audio import CallAudio
from callfleet.agent.options import AgentOptions
from callfleet.agent.session import AgentCall, PipecatAgent
from callfleet.agent.testing import EnergyVAD, FakeEngines


def _spoken(params: dict[str, object]) -> list[str]:
    engines = FakeEngines(seconds_per_word=0.1)
    options = AgentOptions.from_params(params)

    async def main() -> None:
        agent = PipecatAgent(engines, vad_factory=EnergyVAD)
        audio = CallAudio()
        line = PhoneLine(audio, [Pause(3.0)])
        hangup = asyncio.Event()

        async def callee() -> None:
            await line.run(linger_s=0.5)
            hangup.set()

        task = asyncio.create_task(callee())
        async with asyncio.timeout(30):
            await agent.run(AgentCall("test-call", options, None), audio, hangup)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    return [text for tts in engines.ttss for text in tts.spoken]


def test_pronunciation_replacements_are_spoken_literally() -> None:
    spoken = _spoken(
        {
            "task": "Say hello.",
            "first_sentence": "Welcome to Acme and Zed today.",
            "pronunciation_guide": [
                {"word": "Acme", "pronunciation": r"Ack \1 me"},
                {"word": "Zed", "pronunciation": r"zee \g<0>"},
            ],
        }
    )
    assert spoken, "the agent said nothing"
    assert spoken[0] == r"Welcome to Ack \1 me and zee \g<0> today."

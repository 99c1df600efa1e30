"""`ReadyAudio`: lines synthesised ahead, shared by the calls that say them."""

from __future__ import annotations

import asyncio
import threading

from callfleet.agent.providers.ready_audio import ReadyAudio, sentences
from callfleet.agent.providers.utterance_tts import spoken_lines


def test_a_line_is_made_once_and_a_cancelled_wait_does_not_cancel_it() -> None:
    made: list[str] = []
    release = threading.Event()

    def synthesize(text: str) -> tuple[bytes, int]:
        release.wait(5)
        made.append(text)
        return text.encode(), 8000

    ready = ReadyAudio(synthesize)

    async def main() -> None:
        ready.prepare(["Hello there."])
        ready.prepare(["Hello there."])  # already under way: not made again
        waiting = asyncio.create_task(ready.take("Hello there."))
        await asyncio.sleep(0.05)
        waiting.cancel()  # the call was interrupted while it waited
        release.set()
        assert await ready.take("Hello there.") == (b"Hello there.", 8000)
        ready.prepare(["Hello there.", "Goodbye."])  # the cache stays usable
        assert await ready.take("Goodbye.") == (b"Goodbye.", 8000)
        assert await ready.take("Never prepared.") is None

    try:
        asyncio.run(main())
    finally:
        ready.close()
    assert made == ["Hello there.", "Goodbye."]
    assert (ready.hits, ready.misses) == (2, 1)


def test_lines_are_prepared_whole_and_sentence_by_sentence_after_the_guide() -> None:
    assert sentences("Hi there. How are you?") == ["Hi there.", "How are you?"]
    lines = spoken_lines(["Call Acme. Bye!", "", "  "], [("Acme", "Ack-me")])
    assert lines == ["Call Ack-me. Bye!", "Call Ack-me.", "Bye!"]

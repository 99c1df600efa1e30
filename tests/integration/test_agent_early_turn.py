"""Smart Turn's verdict started in the callee's pause (`SharedSmartTurn`), on the real
model and the simulated people's voice: used when the pause was the end of speech,
with the verdict the analysis at the VAD's stop would give, and never when the VAD
heard speech after the pause began."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from tests.support.speech_sets import people_phone_audio

from callfleet.agent.providers.smart_turn import SharedSmartTurn
from callfleet.agent.resample import Upsampler2x
from callfleet.simulator import voices

pytestmark = pytest.mark.slow

RATE = 16000
FRAME = 320  # 20 ms
VAD_STOP_S = 0.4


def speech(text: str) -> np.ndarray:
    """`text` as the agent hears it (16 kHz), its trailing quiet cut."""
    voices.render_all([text])
    x = np.frombuffer(Upsampler2x().process(people_phone_audio(text)), dtype="<i2")
    loud = np.flatnonzero(np.abs(x) > 300)
    return x[: int(loud[-1]) + 1]


def quiet(seconds: float, level: int = 0) -> np.ndarray:
    noise = np.random.default_rng(7).integers(-level, level + 1, int(RATE * seconds))
    return noise.astype(np.int16) if level else np.zeros(int(RATE * seconds), dtype=np.int16)


def hear(*analyzers: SharedSmartTurn, audio: np.ndarray) -> None:
    """Feed the audio as the VAD still calls speech, frame by frame, in real time (an
    early verdict runs while the audio goes on, as on a call)."""
    audio = np.concatenate([audio, np.zeros(-len(audio) % FRAME, dtype=np.int16)])  # whole frames
    began = time.monotonic()
    for i, start in enumerate(range(0, len(audio), FRAME)):
        time.sleep(max(0.0, began + i * FRAME / RATE - time.monotonic()))
        for analyzer in analyzers:
            analyzer.append_audio(audio[start : start + FRAME].tobytes(), True)


def verdict(analyzer: SharedSmartTurn) -> tuple[str, float]:
    state, metrics = asyncio.run(analyzer.analyze_end_of_turn())
    return state.name, float(getattr(metrics, "probability", -1.0))


def analyzers() -> tuple[SharedSmartTurn, SharedSmartTurn]:
    early = SharedSmartTurn(max_wait_s=2.0, vad_stop_s=VAD_STOP_S)
    at_stop = SharedSmartTurn(max_wait_s=2.0)  # no early verdict: the reference
    for analyzer in (early, at_stop):
        analyzer.set_sample_rate(RATE)
    return early, at_stop


def settle(analyzer: SharedSmartTurn) -> None:
    """Wait for the analyzer's thread (an early verdict runs there)."""
    analyzer._model_executor.submit(lambda: None).result(timeout=10)  # noqa: SLF001


@pytest.mark.parametrize(
    "parts",
    [
        ["Sure, that sounds good to me."],
        ["I'd want to check with my wife first, before"],
        # a pause inside the turn, then more words: the first pause's verdict is dropped
        ["Maybe next week", 0.3, "would be better for me."],
    ],
)
def test_the_pause_s_verdict_is_the_turn_s(parts: list[str | float]) -> None:
    audio = np.concatenate(
        [quiet(p) if isinstance(p, float) else speech(p) for p in parts] + [quiet(VAD_STOP_S)]
    )
    early, at_stop = analyzers()
    try:
        hear(early, at_stop, audio=audio)
        settle(early)
        got, expected = verdict(early), verdict(at_stop)
        assert early.early_used == 1
        assert at_stop.early_used == 0
        assert got[0] == expected[0]
        assert got[1] == pytest.approx(expected[1], abs=0.05)
    finally:
        for analyzer in (early, at_stop):
            asyncio.run(analyzer.cleanup())


def test_speech_the_level_missed_keeps_the_verdict_for_the_vad_s_stop() -> None:
    """A soft sound after the pause began (under the pause detector's level, but speech
    to the VAD, which stops only 0.4 s after it): the early verdict did not hear it."""
    audio = np.concatenate(
        [speech("Okay, thank you for calling."), quiet(0.3), quiet(0.3, level=40)]
        + [quiet(VAD_STOP_S)]
    )
    early, _ = analyzers()
    try:
        hear(early, audio=audio)
        settle(early)
        state, probability = verdict(early)
        assert early.early_used == 0
        assert state in {"COMPLETE", "INCOMPLETE"} and 0.0 <= probability <= 1.0
    finally:
        asyncio.run(early.cleanup())

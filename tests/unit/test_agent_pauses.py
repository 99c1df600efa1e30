"""Where the callee's voice goes quiet (`PauseDetector`), and whether work started in
a pause heard all of the speech the VAD ended (`heard_all_speech`)."""

from __future__ import annotations

import numpy as np
import pytest

from callfleet.agent.providers.pauses import VAD_SLACK_S, PauseDetector, heard_all_speech

RATE = 16000


def frame(rms: float, seed: int = 0) -> bytes:
    """20 ms of noise at this RMS."""
    noise = np.random.default_rng(seed).standard_normal(RATE // 50)
    return (noise / np.sqrt(np.mean(noise**2)) * rms).astype("<i2").tobytes()


def test_quiet_is_counted_from_where_the_voice_drops_26_db() -> None:
    pauses = PauseDetector(RATE)
    assert [pauses.feed(frame(4000, i)) for i in range(10)] == [False] * 10
    assert pauses.feed(frame(4000 * 0.1)) is False  # 20 dB down: a soft sound, not quiet
    assert pauses.quiet_s == 0.0
    assert all(pauses.feed(frame(4000 * 0.03, i)) for i in range(6))  # 30 dB down
    assert pauses.quiet_s == pytest.approx(0.12)
    assert pauses.feed(frame(4000)) is False  # the voice again
    assert pauses.quiet_s == 0.0


def test_line_noise_is_quiet_even_before_any_speech() -> None:
    pauses = PauseDetector(RATE)
    assert pauses.feed(frame(30))  # under the floor
    assert not pauses.feed(frame(300))  # over it, and the loudest heard so far


def test_reset_forgets_the_loudest_level() -> None:
    pauses = PauseDetector(RATE)
    pauses.feed(frame(8000))
    assert pauses.feed(frame(300))  # 28 dB under 8000
    pauses.reset()
    assert pauses.level == 0.0 and pauses.quiet_s == 0.0
    assert not pauses.feed(frame(300))  # now it is the loudest


@pytest.mark.parametrize(
    ("since", "heard"),
    [(0.30, True), (0.4, True), (0.4 + VAD_SLACK_S, True), (0.46, False), (0.8, False)],
)
def test_work_started_before_the_vad_s_end_of_speech_missed_some(since: float, heard: bool) -> None:
    assert heard_all_speech(since, vad_stop_s=0.4) is heard

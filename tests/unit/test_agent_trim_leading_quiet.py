"""`trim_leading_quiet`: the quiet before a voice's first sound is cut, 10 ms kept."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from callfleet.agent.providers.utterance_tts import trim_leading_quiet

RATE = 16000
ONSET = 328  # the quietest sample that counts as sound


def _pcm(samples: npt.NDArray[np.int64] | npt.NDArray[np.float64]) -> bytes:
    return np.asarray(samples).astype("<i2").tobytes()


def _tone(ms: int, rate: int = RATE, amplitude: float = 10000.0) -> npt.NDArray[np.float64]:
    """A 440 Hz tone that is loud from its first sample (a cosine starts at its peak)."""
    t = np.arange(rate * ms // 1000) / rate
    tone: npt.NDArray[np.float64] = amplitude * np.cos(2 * np.pi * 440 * t)
    return tone


def _kept(rate: int) -> int:
    return int(rate * 0.01)


@pytest.mark.parametrize("rate", [8000, 16000, 22050])
def test_silence_before_a_tone_is_cut_to_ten_ms(rate: int) -> None:
    silence = np.zeros(rate * 60 // 1000)
    tone = _tone(200, rate)
    pcm = _pcm(np.concatenate([silence, tone]))
    out = trim_leading_quiet(pcm, rate)
    onset = len(silence)  # the tone's first sample is its first loud one
    assert abs(tone[0]) >= ONSET
    assert out == pcm[(onset - _kept(rate)) * 2 :]
    assert len(out) == (_kept(rate) + len(tone)) * 2
    assert out[: _kept(rate) * 2] == bytes(_kept(rate) * 2)
    assert out[-len(tone) * 2 :] == _pcm(tone)


def test_a_tone_that_starts_quiet_is_cut_before_its_first_loud_sample() -> None:
    silence = np.zeros(960)
    tone = 10000.0 * np.sin(2 * np.pi * 440 * np.arange(3200) / RATE)  # starts at 0
    pcm = _pcm(np.concatenate([silence, tone]))
    first_loud = len(silence) + int(np.flatnonzero(np.abs(tone.astype("<i2")) >= ONSET)[0])
    assert first_loud > len(silence)
    out = trim_leading_quiet(pcm, RATE)
    assert out == pcm[(first_loud - _kept(RATE)) * 2 :]
    assert out[-len(tone) * 2 :] == _pcm(tone)


def test_noise_below_the_onset_is_cut_too() -> None:
    rng = np.random.default_rng(7)
    noise = rng.integers(-(ONSET - 1), ONSET, size=960)  # |x| <= 327
    assert int(np.abs(noise).max()) < ONSET
    tone = _tone(100)
    pcm = _pcm(np.concatenate([noise, tone]))
    out = trim_leading_quiet(pcm, RATE)
    assert out == pcm[(len(noise) - _kept(RATE)) * 2 :]
    assert out[-len(tone) * 2 :] == _pcm(tone)


@pytest.mark.parametrize("first", [-ONSET, ONSET, -32768, 32767])
def test_one_sample_at_or_above_the_onset_counts_as_sound(first: int) -> None:
    samples = np.zeros(1000, dtype=np.int64)
    samples[500] = first
    pcm = _pcm(samples)
    assert trim_leading_quiet(pcm, RATE) == pcm[(500 - _kept(RATE)) * 2 :]


@pytest.mark.parametrize(
    "samples",
    [
        np.zeros(1600, dtype=np.int64),
        np.full(1600, ONSET - 1, dtype=np.int64),
        np.full(1600, -(ONSET - 1), dtype=np.int64),
        np.random.default_rng(3).integers(-(ONSET - 1), ONSET, size=1600),
    ],
    ids=["zeros", "just-below", "just-below-negative", "noise"],
)
def test_input_with_nothing_loud_is_unchanged(samples: npt.NDArray[np.int64]) -> None:
    pcm = _pcm(samples)
    assert trim_leading_quiet(pcm, RATE) == pcm


def test_input_that_starts_loud_is_unchanged() -> None:
    pcm = _pcm(_tone(100))
    assert trim_leading_quiet(pcm, RATE) == pcm


def test_sound_within_the_first_ten_ms_leaves_the_input_unchanged() -> None:
    samples = np.concatenate([np.zeros(_kept(RATE) - 1), _tone(50)])
    pcm = _pcm(samples)
    assert trim_leading_quiet(pcm, RATE) == pcm


@pytest.mark.parametrize("pcm", [b"", b"\x00", b"\xff"])
def test_empty_or_single_byte_input_is_unchanged(pcm: bytes) -> None:
    assert trim_leading_quiet(pcm, RATE) == pcm


def test_an_odd_byte_length_does_not_crash() -> None:
    silence = np.zeros(960)
    tone = _tone(100)
    pcm = _pcm(np.concatenate([silence, tone])) + b"\x7f"  # half a sample at the end
    assert len(pcm) % 2 == 1
    out = trim_leading_quiet(pcm, RATE)
    assert out == pcm[(len(silence) - _kept(RATE)) * 2 :]
    assert out.endswith(b"\x7f")
    quiet = _pcm(np.zeros(960)) + b"\x7f"
    assert trim_leading_quiet(quiet, RATE) == quiet

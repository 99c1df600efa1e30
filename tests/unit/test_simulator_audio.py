"""The simulator's synthetic audio, playlist and number normalisation."""

from __future__ import annotations

import pytest

from callfleet import synth as audio
from callfleet.simulator.sip_server import SimulatorConfig, normalise_number

FRAME = audio.FRAME_BYTES


def test_beep_is_a_clean_1khz_tone() -> None:
    beep = audio.beep(0.5)
    assert len(beep) == 25 * FRAME
    assert audio.tone_level(beep, 1000.0) > 0.3
    assert audio.tone_level(beep, 500.0) < 0.01
    assert audio.tone_purity(bytes(FRAME), 1000.0) == 0.0


def _frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]


def test_speech_like_has_energy_and_no_beep() -> None:
    speech = audio.voicemail_greeting(8.0)
    assert len(speech) == 400 * FRAME
    frames = _frames(speech)
    loud = sum(audio.rms(f) > 0.02 for f in frames)
    assert 0.4 * len(frames) < loud < len(frames)  # syllables with gaps between them
    assert max(audio.tone_purity(f, 1000.0) for f in frames) < 0.6
    assert min(audio.tone_purity(f, 1000.0) for f in _frames(audio.beep())) > 0.9
    assert audio.speech_like(1.0, seed=3) == audio.speech_like(1.0, seed=3)  # deterministic


def test_human_says_hello_then_pauses() -> None:
    hello = audio.human_hello()
    assert audio.rms(hello[: 25 * FRAME]) > 0.02
    assert audio.rms(hello[-50 * FRAME :]) == 0.0
    assert 10.0 < len(audio.human_chatter()) / (2 * audio.SAMPLE_RATE) < 20.0


def test_playlist_marks_segment_ends_then_loops_its_tail() -> None:
    marks: list[tuple[str, int]] = []
    frames: list[bytes] = []

    def mark(label: str) -> None:
        marks.append((label, len(frames) + 1))  # called while the frame is being read

    playlist = audio.Playlist(
        [("a", b"\x01" * (2 * FRAME)), ("b", b"\x02" * (FRAME + 10))],
        then=b"\x03" * FRAME,
        on_mark=mark,
    )
    for _ in range(6):
        frame = playlist.read()
        assert frame is not None and len(frame) == FRAME
        frames.append(frame[:1] + frame[-1:])
    assert marks == [("a", 2), ("b", 4)]
    assert frames == [b"\x01\x01", b"\x01\x01", b"\x02\x02", b"\x02\x00", b"\x03\x03", b"\x03\x03"]
    assert playlist.finished
    assert audio.Playlist([("x", b"\x01" * FRAME)]).read() is not None


def test_playlist_without_tail_falls_silent() -> None:
    playlist = audio.Playlist([("x", b"\x01" * FRAME)])
    assert playlist.read() is not None
    assert playlist.read() is None


@pytest.mark.parametrize(
    ("user", "number"),
    [
        ("+12125550101", "+12125550101"),
        ("12125550101", "+12125550101"),
        ("2125550101", "+12125550101"),
        ("%2B1-212-555-0101", "+12125550101"),
        ("+1 (212) 555.0101;isub=1", "+12125550101"),
        ("bot", "bot"),
        ("", ""),
    ],
)
def test_request_uri_users_become_e164(user: str, number: str) -> None:
    assert normalise_number(user) == number


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="transport"):
        SimulatorConfig(transport="sctp")
    with pytest.raises(ValueError, match="time_scale"):
        SimulatorConfig(time_scale=-1)
    with pytest.raises(ValueError, match="both"):
        SimulatorConfig(username="alice")

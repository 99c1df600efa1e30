"""`CallAudio` (pacing, barge-in, recording), `StereoRecorder` and `Upsampler2x`."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from callfleet import synth
from callfleet.agent.call_audio import FRAME_BYTES, CallAudio
from callfleet.agent.recording import StereoRecorder
from callfleet.agent.resample import Upsampler2x


def test_read_gives_comfort_silence_when_idle_and_audio_frame_by_frame() -> None:
    audio = CallAudio()
    assert audio.read() == bytes(FRAME_BYTES)
    tone = synth.tone(440.0, 0.05)  # 2.5 frames
    asyncio.run(audio.play(tone))
    frames = [audio.read() for _ in range(4)]
    assert b"".join(frames[:2]) == tone[: 2 * FRAME_BYTES]
    assert frames[2] == tone[2 * FRAME_BYTES :].ljust(FRAME_BYTES, b"\x00")
    assert frames[3] == bytes(FRAME_BYTES)


def test_play_blocks_while_more_than_max_queued_and_resumes_as_the_clock_reads() -> None:
    async def main() -> list[float]:
        audio = CallAudio(max_queued_ms=60)
        loop = asyncio.get_running_loop()
        returned: list[float] = []

        async def producer() -> None:
            for _ in range(5):
                await audio.play(bytes(2 * FRAME_BYTES))  # 40 ms each
                returned.append(loop.time())

        task = asyncio.create_task(producer())
        start = loop.time()
        for _ in range(12):  # the RTP clock
            await asyncio.sleep(0.02)
            audio.read()
        await asyncio.wait_for(task, 1.0)
        return [t - start for t in returned]

    times = asyncio.run(main())
    assert times[0] < 0.01  # 40 ms fits in the buffer at once
    assert times[-1] > 0.08  # the rest waited for the clock to drain it


def test_clear_playout_drops_queued_audio_at_once() -> None:
    audio = CallAudio(max_queued_ms=10_000)
    asyncio.run(audio.play(synth.tone(440.0, 1.0)))
    assert audio.queued_ms == 1000
    assert audio.clear_playout() == 1000
    assert audio.read() == bytes(FRAME_BYTES)


def test_frames_yields_what_was_fed_until_closed() -> None:
    async def main() -> list[bytes]:
        audio = CallAudio()
        got: list[bytes] = []

        async def consume() -> None:
            async for frame in audio.frames():
                got.append(frame)

        task = asyncio.create_task(consume())
        for i in range(3):
            audio.feed(bytes([i]) * FRAME_BYTES)
            await asyncio.sleep(0)
        audio.close()
        await asyncio.wait_for(task, 1.0)
        return got

    assert [frame[0] for frame in asyncio.run(main())] == [0, 1, 2]


def test_recording_is_stereo_callee_left_agent_right(tmp_path: Path) -> None:
    audio = CallAudio(max_queued_ms=10_000)
    recorder = StereoRecorder(tmp_path / "r.wav")
    audio.recorder = recorder
    callee = synth.tone(300.0, 0.2)
    asyncio.run(audio.play(synth.tone(1200.0, 0.2)))
    for i in range(0, len(callee), FRAME_BYTES):  # RtpSession's order: send, then receive
        audio.read()
        audio.feed(callee[i : i + FRAME_BYTES])
    audio.read()
    recorder.close()
    with wave.open(str(tmp_path / "r.wav")) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    left = data[:, 0].astype(np.int16).tobytes()
    right = data[:, 1].astype(np.int16).tobytes()
    assert synth.tone_purity(left[FRAME_BYTES : 8 * FRAME_BYTES], 300.0) > 0.9
    assert synth.tone_purity(right[: 8 * FRAME_BYTES], 1200.0) > 0.9


def test_upsampler_doubles_the_rate_and_keeps_a_tone() -> None:
    up = Upsampler2x()
    tone = synth.tone(1000.0, 0.2)
    out = b"".join(up.process(tone[i : i + FRAME_BYTES]) for i in range(0, len(tone), FRAME_BYTES))
    assert len(out) == 2 * len(tone)
    samples = np.frombuffer(out, dtype="<i2").astype(float)[400:-400]
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / 16000)
    assert abs(freqs[int(np.argmax(spectrum))] - 1000) < 20
    image = spectrum[(freqs > 6500) & (freqs < 7500)].max()  # the 7 kHz mirror image
    assert image < spectrum.max() / 100
    assert abs(np.sqrt((samples**2).mean()) / 32767 - 0.3 / np.sqrt(2)) < 0.02


def test_call_audio_times_the_reply_from_the_callee_last_sound_to_the_agent_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from callfleet.agent import call_audio

    clock = [100.0]
    monkeypatch.setattr(call_audio.time, "monotonic", lambda: clock[0])
    loud = np.full(160, 4000, dtype="<i2").tobytes()
    quiet = bytes(320)
    audio = call_audio.CallAudio(max_queued_ms=10_000)

    def tick(callee: bytes) -> bytes:
        audio.feed(callee)
        sent = audio.read()
        clock[0] += 0.020
        return sent

    for _ in range(25):  # the callee speaks for 0.5 s ...
        tick(loud)
    for _ in range(40):  # ... then 0.8 s of quiet, the agent silent too
        tick(quiet)

    async def queue_reply() -> None:  # a reply with a 0.2 s quiet lead-in
        await audio.play(quiet * 10 + loud * 10)

    asyncio.run(queue_reply())
    for _ in range(20):
        tick(quiet)
    # Speech ended at 0.5 s; the reply's first loud frame left 0.8 + 0.2 s later.
    assert audio.latencies_ms == [pytest.approx(1000.0, abs=1)]

    # A short noise from the callee (under 0.3 s) is not a turn: no measurement.
    for _ in range(5):
        tick(loud)
    for _ in range(10):
        tick(quiet)
    asyncio.run(queue_reply())
    for _ in range(20):
        tick(quiet)
    assert len(audio.latencies_ms) == 1

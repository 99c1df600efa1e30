"""A call's recording: a stereo WAV with the callee on the left and the agent on the right.

`StereoRecorder` is a `CallAudio` recorder: it receives one (callee, agent) pair of
20 ms frames per RTP tick, so both channels share the RTP clock and stay aligned
for the whole call, and it streams them to disk as it goes (a 30-minute call never
sits in memory). The file is 8 kHz 16-bit PCM, the call's own audio quality.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

__all__ = ["StereoRecorder"]

_SAMPLE_RATE = 8000


class StereoRecorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # kept open for the whole call and closed by close(), hence no `with`
        self._wav: wave.Wave_write | None = wave.open(str(path), "wb")  # noqa: SIM115
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(_SAMPLE_RATE)
        self.frames = 0

    def write(self, callee: bytes, agent: bytes) -> None:
        if self._wav is None:
            return
        left = np.frombuffer(callee[: len(callee) & ~1], dtype="<i2")
        right = np.frombuffer(agent[: len(agent) & ~1], dtype="<i2")
        n = max(len(left), len(right))
        stereo = np.zeros((n, 2), dtype="<i2")
        stereo[: len(left), 0] = left
        stereo[: len(right), 1] = right
        self._wav.writeframes(stereo.tobytes())  # "<i2": little-endian as WAV wants
        self.frames += 1

    @property
    def seconds(self) -> float:
        return self.frames * 0.020

    def close(self) -> Path:
        if self._wav is not None:
            self._wav.close()
            self._wav = None
        return self.path

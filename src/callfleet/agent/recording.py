"""A call's recording: a stereo WAV with the callee on the left and the agent on the right.

`StereoRecorder` is a `CallAudio` recorder: it receives one (callee, agent) pair of
20 ms frames per RTP tick, so both channels share the RTP clock and stay aligned
for the whole call, and it streams them to disk as it goes (a 30-minute call never
sits in memory). The file is 8 kHz 16-bit PCM, the call's own audio quality. It is
created owner-only (0600), in an owner-only directory if we create it: a recording
is a callee's voice.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np

__all__ = ["StereoRecorder"]

_SAMPLE_RATE = 8000


class StereoRecorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older file of the same name keeps no wider mode
        # kept open for the whole call and closed by close(), hence no `with`; wave does
        # not close a file object it was given, so close() closes both
        self._file = os.fdopen(fd, "wb")
        self._wav: wave.Wave_write | None = wave.open(self._file, "wb")  # noqa: SIM115
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
            self._file.close()
        return self.path

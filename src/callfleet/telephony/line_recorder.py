"""The recording of a call nobody talks on: the callee's side as a mono WAV.

With the AI agent off (`CALLFLEET_AGENT_ENABLED=false`, or the simulator's fast
mode), a call sent with `record: true` still gets a recording: what the RTP stream
brought from the callee, 8 kHz 16-bit PCM, one 20 ms frame per tick, streamed to
disk. Like the agent's stereo recording it is created owner-only.
"""

from __future__ import annotations

import os
import wave
from pathlib import Path

__all__ = ["LineRecorder"]


class LineRecorder:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._wav: wave.Wave_write | None = wave.open(self._file, "wb")  # noqa: SIM115
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(8000)

    def write(self, pcm: bytes) -> None:
        if self._wav is not None:
            self._wav.writeframes(pcm)

    def close(self) -> Path:
        if self._wav is not None:
            self._wav.close()
            self._wav = None
            self._file.close()
        return self.path

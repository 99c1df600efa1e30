"""`PauseDetector`: where the callee's voice goes quiet, frame by frame.

The VAD ends a stretch of speech only after 0.4 s of quiet. Work that needs the
end of speech (the transcript, Smart Turn's verdict) can start earlier, in the
pause, and be used if the pause turns out to be the end: `LocalWhisperSTT` and
`SharedSmartTurn` both do. A frame is quiet when its level is `QUIET_DB` under the
loudest of the speech so far (which forgets slowly), or under a floor of line
noise; a soft "f" or "th" inside a word is louder than that.
"""

from __future__ import annotations

import numpy as np

__all__ = ["QUIET_DB", "VAD_SLACK_S", "PauseDetector", "heard_all_speech"]

QUIET_DB = 26.0
_FLOOR = 60.0
"""Any frame under this RMS (about -55 dBFS: line noise) is quiet."""
_DECAY = 0.995
"""Per frame: the loudest level forgets by about 6 dB in 5 s of 20 ms frames."""
VAD_SLACK_S = 0.05
"""How much of what the VAD heard as speech work started in a pause may miss (the
VAD's 32 ms analysis window) and still count."""


def heard_all_speech(seconds_since: float, vad_stop_s: float) -> bool:
    """Whether work started `seconds_since` before the VAD ended the speech heard all of
    it: the VAD places the end of speech `vad_stop_s` before its stop, so work started
    earlier than that (less `VAD_SLACK_S`) missed a soft last word the level did not
    show. A frame or two that arrived after the VAD decided only makes this stricter."""
    return seconds_since <= vad_stop_s + VAD_SLACK_S


class PauseDetector:
    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.level = 0.0
        """The loudest frame's RMS, decaying slowly."""
        self.quiet_s = 0.0
        """How long the voice has been quiet (0 while it is not)."""

    def reset(self) -> None:
        self.level = self.quiet_s = 0.0

    def feed(self, pcm: bytes) -> bool:
        """Hear one frame of 16-bit mono PCM; True if it is quiet."""
        samples = np.frombuffer(pcm[: len(pcm) & ~1], dtype="<i2")
        if not len(samples):
            return self.quiet_s > 0
        rms = float(np.sqrt(np.mean(samples.astype(np.float32) ** 2)))
        self.level = max(self.level * _DECAY, rms)
        if rms > max(_FLOOR, self.level * 10 ** (-QUIET_DB / 20)):
            self.quiet_s = 0.0
            return False
        self.quiet_s += len(samples) / self.sample_rate
        return True

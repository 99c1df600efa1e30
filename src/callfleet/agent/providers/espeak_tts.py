"""The espeak-ng voice: robotic, instant, and always there (Debian package `espeak-ng`).

Each utterance runs `espeak-ng --stdout` as a child process (espeak-ng is GPL, so
it is never linked in), about 20-50 ms for a sentence. It is the fallback when
Piper cannot start, and the voice the tests use to make callee speech.
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from callfleet.agent.providers.utterance_tts import UtteranceTTSService
from callfleet.wavfile import parse_wav

__all__ = ["EspeakTTS", "EspeakUnavailable", "espeak_path", "espeak_pcm", "parse_wav"]


class EspeakUnavailable(RuntimeError):
    """The espeak-ng program is not installed."""


def espeak_path() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakUnavailable("espeak-ng is not installed: apt-get install espeak-ng")
    return path


async def espeak_pcm(
    text: str, *, voice: str = "en-us", words_per_minute: int = 160
) -> tuple[bytes, int]:
    """Synthesise `text` with espeak-ng; returns (16-bit mono PCM, sample rate)."""
    proc = await asyncio.create_subprocess_exec(
        espeak_path(),
        "-v",
        voice,
        "-s",
        str(words_per_minute),
        "--stdout",
        "--",
        text,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng failed ({proc.returncode}): {err.decode(errors='replace')}")
    return parse_wav(out)


class EspeakTTS(UtteranceTTSService):
    def __init__(self, *, voice: str = "en-us", **kwargs: Any) -> None:
        espeak_path()
        super().__init__(voice=voice, **kwargs)
        self._espeak_voice = voice

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        return await espeak_pcm(text, voice=self._espeak_voice)

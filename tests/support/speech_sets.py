"""Audio made for tests and the labelled sets the agent is measured on.

- `phone_channel`, `espeak_phone_audio`: known sentences spoken by espeak-ng,
  band-limited to 8 kHz and passed through G.711 mu-law, as a phone would deliver them.
- `word_error_rate`: word-level Levenshtein distance over the reference length.
- `amd_labelled_set`: the labelled calls the answering-machine detector is
  measured on (people greeting briefly, machines with and without a beep, silence,
  noise), built from the simulator's synthetic voices and, when espeak-ng is
  installed, real words.
"""

from __future__ import annotations

import re

import numpy as np

from callfleet import synth
from callfleet.agent.call_audio import SAMPLE_RATE
from callfleet.agent.providers.espeak_tts import espeak_pcm
from callfleet.simulator import voices
from callfleet.telephony.carrier import AnsweredBy
from callfleet.telephony.rtp import g711

__all__ = [
    "HUMAN_PHRASES",
    "MACHINE_PHRASES",
    "amd_labelled_set",
    "espeak_phone_audio",
    "people_phone_audio",
    "phone_channel",
    "word_error_rate",
]


def phone_channel(pcm: bytes, rate: int) -> bytes:
    """PCM at `rate` as the callee's phone delivers it: 8 kHz, through G.711 mu-law."""
    import soxr  # type: ignore[import-untyped]  # ships no type information

    samples = np.frombuffer(pcm[: len(pcm) & ~1], dtype="<i2")
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE)
    narrow = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
    return g711.decode("PCMU", g711.encode("PCMU", narrow))


def people_phone_audio(text: str, *, voice: str = voices.DEFAULT_VOICE) -> bytes:
    """`text` spoken by a simulated person (Piper, `callfleet.simulator.voices`), as
    8 kHz mu-law-degraded PCM."""
    return phone_channel(voices.render(text, voice), SAMPLE_RATE)


async def espeak_phone_audio(
    text: str, *, voice: str = "en-us", words_per_minute: int = 150
) -> bytes:
    """`text` spoken by espeak-ng, as 8 kHz mu-law-degraded PCM."""
    pcm, rate = await espeak_pcm(text, voice=voice, words_per_minute=words_per_minute)
    return phone_channel(pcm, rate)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference length (case and punctuation ignored)."""

    def words(text: str) -> list[str]:
        return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()

    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)


# -- the labelled set for answering-machine detection ---------------------------------------


def _noise(seconds: float, level: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    samples = rng.normal(0.0, level * 32767, int(seconds * SAMPLE_RATE))
    return np.clip(samples, -32767, 32767).astype("<i2").tobytes()


def _mix(pcm: bytes, noise: bytes) -> bytes:
    a = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    b = np.frombuffer(noise[: len(pcm)].ljust(len(pcm), b"\x00"), dtype="<i2").astype(np.int32)
    return bytes(np.clip(a + b, -32767, 32767).astype("<i2").tobytes())


HUMAN_PHRASES = ("Hello?", "Hi, this is Dana.", "Yeah, hello.", "Hello, who is this?")
MACHINE_PHRASES = (
    "Hi, you've reached Dana. I can't take your call right now, "
    "please leave a message after the tone and I'll call you back.",
    "The person you are calling is not available. Please record your message.",
)


def amd_labelled_set(espeak: dict[str, bytes] | None = None) -> list[tuple[AnsweredBy, str, bytes]]:
    """(expected verdict, name, 8 kHz PCM from the moment of answer) for each test call.

    `espeak` maps the phrases in `HUMAN_PHRASES` and `MACHINE_PHRASES` to phone
    audio of them (see `espeak_phone_audio`); without it only synthetic voices are used.
    """
    cases: list[tuple[AnsweredBy, str, bytes]] = []
    silence = synth.silence
    for seed, (delay, length) in enumerate(
        [(d, n) for d in (0.2, 0.5, 0.9) for n in (0.4, 0.7, 1.0, 1.3, 1.7)]
    ):
        greeting = synth.speech_like(length, seed=100 + seed, level=0.15 + 0.02 * (seed % 4))
        call = silence(delay) + greeting + silence(1.6) + synth.human_chatter()[: 16000 * 3]
        cases.append((AnsweredBy.HUMAN, f"human synthetic {length}s after {delay}s", call))
    beeps = (1000.0, 850.0, 1400.0, 440.0)
    for i, (greeting_s, beep) in enumerate(
        [(g, b) for g in (3.0, 5.0, 8.0, 12.0) for b in (True, False)]
    ):
        voice = synth.speech_like(greeting_s, seed=200 + i, level=0.14 + 0.03 * (i % 3))
        call = silence(0.3 + 0.1 * (i % 4)) + voice
        call += (synth.tone(beeps[i // 2], 0.5, level=0.35) if beep else b"") + silence(4.0)
        cases.append(
            (AnsweredBy.VOICEMAIL, f"machine {greeting_s}s {'with' if beep else 'no'} beep", call)
        )
    cases.append((AnsweredBy.UNKNOWN, "silence", silence(8.0)))
    cases.append((AnsweredBy.UNKNOWN, "line noise -40 dBFS", _noise(8.0, 0.01, 1)))
    cases.append((AnsweredBy.UNKNOWN, "line noise -25 dBFS", _noise(8.0, 0.056, 2)))
    cases.append(
        (
            AnsweredBy.HUMAN,
            "hello over noise",
            _mix(silence(0.3) + synth.human_hello() + silence(3.0), _noise(6.0, 0.005, 3)),
        )
    )
    if espeak:
        for j, phrase in enumerate(HUMAN_PHRASES):
            spoken = espeak.get(phrase)
            if spoken:
                call = (
                    silence(0.3 + 0.2 * j) + spoken + silence(2.0) + synth.human_chatter()[:32000]
                )
                cases.append((AnsweredBy.HUMAN, f"human says {phrase!r}", call))
        for phrase in MACHINE_PHRASES:
            spoken = espeak.get(phrase)
            if spoken:
                for beep in (True, False):
                    call = silence(0.5) + spoken + (synth.beep(0.4) if beep else b"") + silence(4.0)
                    name = f"machine says {phrase[:20]!r}… {'with' if beep else 'no'} beep"
                    cases.append((AnsweredBy.VOICEMAIL, name, call))
    return cases

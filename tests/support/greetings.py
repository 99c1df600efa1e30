"""The labelled greetings (`tests/data/greetings.jsonl`) as calls, and the detector run on them.

The greetings were written by hand, as people and machines really answer, before
and apart from the detector's word lists: short and long, households and
businesses, with pauses (" | " is a 0.6 s pause), a second voice (someone in the
room, or a carrier's voicemail system reading a name recorded by its owner), and
machines with and without a beep.

`greeting_call` speaks one with espeak-ng through the phone channel, as the callee's
audio from the moment of answer. `detect` runs the answering-machine detector on
it the way a call does: 20 ms at a time, and the words of each stretch of speech
(an energy VAD, ended by 0.4 s of quiet as the agent's VAD is) transcribed by the
agent's Whisper and handed to `hear` when they would arrive on a call: 0.4 s after
the stretch ended plus the measured transcription time.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.speech_sets import espeak_phone_audio

from callfleet import synth
from callfleet.agent.amd import AmdVerdict, AnsweringMachineDetector
from callfleet.agent.providers.whisper_stt import transcribe_pcm
from callfleet.agent.resample import Upsampler2x
from callfleet.telephony.carrier import AnsweredBy

__all__ = ["Greeting", "Detection", "detect", "greeting_call", "load_greetings"]

GREETINGS = Path(__file__).resolve().parents[1] / "data" / "greetings.jsonl"
_PAUSE_S = 0.6
_FRAME = 320
_SPEECH_DBFS = -40.0
_VAD_STOP_S = 0.4


@dataclass(frozen=True)
class Part:
    voice: str
    text: str


@dataclass(frozen=True)
class Greeting:
    who: str
    """"person" or "machine"."""
    parts: tuple[Part, ...]
    beep: bool = False

    @property
    def expected(self) -> AnsweredBy:
        return AnsweredBy.HUMAN if self.who == "person" else AnsweredBy.VOICEMAIL

    @property
    def text(self) -> str:
        return " ".join(p.text for p in self.parts)


def load_greetings(path: Path = GREETINGS) -> list[Greeting]:
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row: dict[str, Any] = json.loads(line)
        parts = [Part(row["voice"], row["text"])]
        for key in ("second", "tail"):
            if key in row:
                parts.append(Part(row[key]["voice"], row[key]["text"]))
        out.append(Greeting(row["who"], tuple(parts), bool(row.get("beep", False))))
    return out


async def greeting_call(greeting: Greeting, index: int = 0) -> bytes:
    """The callee's audio from answer: a moment's quiet, the greeting, then (a machine)
    its beep, and silence while the agent would talk or leave its message."""
    pcm = synth.silence(0.3 + 0.1 * (index % 5))
    for n, part in enumerate(greeting.parts):
        if n:
            pcm += synth.silence(0.3)
        for k, piece in enumerate(part.text.split(" | ")):
            if k:
                pcm += synth.silence(_PAUSE_S)
            pcm += await espeak_phone_audio(piece, voice=part.voice)
    if greeting.beep:
        pcm += synth.silence(0.2) + synth.tone(1000.0 if index % 2 else 850.0, 0.5, level=0.35)
    return pcm + synth.silence(4.0)


@dataclass
class Detection:
    answered_by: AnsweredBy | None
    decided: AmdVerdict | None
    """The verdict that stands at the end (the revision, if there was one)."""
    heard: list[str] = field(default_factory=list)


def detect(pcm: bytes, model: Any) -> Detection:
    """The detector on one call's audio, hearing the words as a call would."""
    detector = AnsweringMachineDetector(hears_words=True)
    pending: list[tuple[float, str]] = []  # (audio time the words arrive, words)
    segment = bytearray()
    quiet = 0.0
    heard: list[str] = []
    for offset in range(0, len(pcm), _FRAME):
        frame = pcm[offset : offset + _FRAME]
        detector.feed(frame)
        now = detector.elapsed_s
        loud = 20 * math.log10(synth.rms(frame) + 1e-9) >= _SPEECH_DBFS
        if loud:
            segment += frame
            quiet = 0.0
        elif segment:
            segment += frame
            quiet += 0.02
            if quiet >= _VAD_STOP_S:
                began = time.perf_counter()
                text = transcribe_pcm(model, Upsampler2x().process(bytes(segment)))
                pending.append((now + time.perf_counter() - began, text))
                segment.clear()
        for arrival, text in list(pending):
            if now >= arrival:
                pending.remove((arrival, text))
                heard.append(text)
                detector.hear(text)
    decided = detector.revised or detector.verdict
    return Detection(detector.answered_by, decided, heard)

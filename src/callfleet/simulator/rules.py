"""The simulator's phone book: how each test number behaves and what its people say.

Numbers `+1 NPA 555-01XX` (any area code) behave by `XX`, as the README's
test-number table says. Durations are realistic (a US ring cycle is 6 s) and are
multiplied by a time scale: 0 gives instant outcomes for load tests. Spoken words
are never scaled: a sentence takes as long as it takes to say.

| XX     | persona                                                                      |
| ------ | ---------------------------------------------------------------------------- |
| 00-29  | a person: greets ("Hello, this is Dana."), then answers each of the caller's |
|        | turns with the next line of a script of three                                |
| 30-34  | a person who barges in: greets, then talks over the caller's first long turn |
|        | ("Sorry, can you hold on a second?"), then goes on like the above            |
| 35-39  | a person who picks up and says nothing                                       |
| 40-49  | voicemail: a spoken greeting of about 5 s, then a beep                       |
| 50-59  | voicemail without a beep: the greeting, then it records                      |
| 60-69  | busy                                                                         |
| 70-79  | no answer                                                                    |
| 80-89  | decline                                                                      |
| 90-99  | unreachable                                                                  |

Names, voices and script lines are chosen from `XX` alone, so a number always
sounds and talks the same.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["BARGE_IN_LINE", "Behaviour", "Persona", "RING_CYCLE_S", "persona_for"]

RING_CYCLE_S = 6.0
BARGE_IN_LINE = "Sorry, can you hold on a second?"
_TEST_NUMBER = re.compile(r"^\+1\d{3}55501(\d\d)$")

_NAMES = ("Dana", "Alex", "Jordan", "Priya", "Sam", "Morgan", "Chris", "Taylor", "Maria", "Lee")
# espeak-ng voices with a variant: several men and women, all American English. The
# variants Whisper tiny.en hears best come first, so the low numbers tests use most
# are the easiest to transcribe (espeak's female variants are the hardest).
_VOICES = ("en-us+m3", "en-us+f4", "en-us+m7", "en-us+f2", "en-us", "en-us+f3")
# A person's greeting is short (under 2 s) and then they wait: what the agent's
# answering-machine detector expects of a human.
_GREETINGS = ("Hello, this is {name}.", "Hi, {name} speaking.", "Hello? This is {name}.")
_OPENERS = (
    "Yes, that's me. What is this about?",
    "Oh, hi. What can I do for you?",
    "Speaking. Who is calling, please?",
    "Yes? What's this regarding?",
)
_MIDDLES = (
    "Okay. Can you tell me a bit more?",
    "I see. How much would that cost?",
    "Hmm, I'm not sure. What are my options?",
    "Sure, Tuesday afternoon works for me.",
    "That sounds good. What happens next?",
)
_CLOSERS = (
    "Great, thank you. That's all I needed.",
    "Alright, thanks for calling. Goodbye.",
    "No, I think that's everything. Bye now.",
)
_AFTER_BARGE_IN = "Okay, I'm back. Sorry about that, please go on."


class Behaviour(enum.StrEnum):
    HUMAN = "human"
    VOICEMAIL = "voicemail"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    DECLINE = "decline"
    UNREACHABLE = "unreachable"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Persona:
    """What the phone at a number does, with its timings in seconds (unscaled).

    A person says `greeting` on answering (nothing if empty), then answers each of
    the caller's turns with the next of `lines`; with `barge_in` set it also talks
    over the caller's first long turn with that line. A voicemail box speaks
    `greeting`, then beeps if `beep`. `greeting_s` is the nominal length of a
    voicemail greeting for carriers that play no audio.
    """

    behaviour: Behaviour
    ring_s: float = 0.0
    talk_s: float = 0.0
    greeting_s: float = 0.0
    name: str = ""
    voice: str = "en-us"
    greeting: str = ""
    lines: tuple[str, ...] = ()
    barge_in: str | None = None
    beep: bool = True

    @property
    def texts(self) -> tuple[str, ...]:
        """Everything this persona may say, to render ahead of the call."""
        said = (self.greeting, *self.lines, self.barge_in or "")
        return tuple(text for text in said if text)


def _human(xx: int) -> Persona:
    rings = 1 + xx % 3
    name = _NAMES[xx % len(_NAMES)]
    voice = _VOICES[xx % len(_VOICES)]
    ring_s, talk_s = rings * RING_CYCLE_S, 20.0 + (xx * 7) % 40
    if xx >= 35:  # picks up and says nothing
        return Persona(Behaviour.HUMAN, ring_s, talk_s, name=name, voice=voice)
    greeting = _GREETINGS[xx % len(_GREETINGS)].format(name=name)
    lines = (
        _OPENERS[xx % len(_OPENERS)],
        _MIDDLES[(xx // 2) % len(_MIDDLES)],
        _CLOSERS[(xx // 3) % len(_CLOSERS)],
    )
    barge_in = None
    if xx >= 30:
        barge_in = BARGE_IN_LINE
        lines = (_AFTER_BARGE_IN, *lines[1:])
    return Persona(
        Behaviour.HUMAN, ring_s, talk_s, name=name, voice=voice, greeting=greeting, lines=lines,
        barge_in=barge_in,
    )  # fmt: skip


def _voicemail(xx: int) -> Persona:
    name = _NAMES[(xx + 4) % len(_NAMES)]  # Sam at 40 and 50
    voice = _VOICES[xx % len(_VOICES)]
    if xx < 50:
        greeting = (
            f"Hi, you've reached the voicemail of {name}. Please leave a message after the tone."
        )
    else:
        greeting = (
            f"Hi, this is {name}. I can't take your call right now. "
            "Please leave your name and number, and I'll call you back."
        )
    return Persona(
        Behaviour.VOICEMAIL, ring_s=4 * RING_CYCLE_S, greeting_s=8.0, name=name, voice=voice,
        greeting=greeting, beep=xx < 50,
    )  # fmt: skip


def persona_for(number: str) -> Persona:
    match = _TEST_NUMBER.match(number)
    if match is None:
        return Persona(Behaviour.UNKNOWN)
    xx = int(match.group(1))
    if xx < 40:
        return _human(xx)
    if xx < 60:
        return _voicemail(xx)
    if xx < 70:
        return Persona(Behaviour.BUSY, ring_s=1.0)
    if xx < 80:
        return Persona(Behaviour.NO_ANSWER)
    if xx < 90:
        return Persona(Behaviour.DECLINE, ring_s=(1 + xx % 2) * RING_CYCLE_S)
    return Persona(Behaviour.UNREACHABLE, ring_s=0.5)

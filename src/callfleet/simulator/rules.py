"""The simulator's phone book: how each test number behaves and what its people say.

Numbers `+1 NPA 555-01XX` (any area code) behave by `XX`, as the README's
test-number table says. Durations are realistic (a US ring cycle is 6 s) and are
multiplied by a time scale: 0 gives instant outcomes for load tests. Spoken words
are never scaled: a sentence takes as long as it takes to say.

| XX     | persona                                                                      |
| ------ | ---------------------------------------------------------------------------- |
| 00-24  | a person: greets ("Hello, this is Dana."), then answers each of the caller's |
|        | turns with the next line of a script of three                                |
| 25-27  | a person who asks to be taken off the list: greets, then answers the         |
|        | caller's first turn with an opt-out ("Please take me off your list.")        |
| 28-29  | a person who pauses mid-sentence: as above, but each line has pauses of      |
|        | 0.4-0.8 s inside it ("Well, I was thinking [0.7] about next Tuesday.")       |
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

from callfleet.simulator.hesitation import voiced

__all__ = [
    "BARGE_IN_LINE",
    "OPT_OUT_LINES",
    "Behaviour",
    "Persona",
    "RING_CYCLE_S",
    "PAUSING_LINES",
    "persona_for",
    "script_lines",
]

RING_CYCLE_S = 6.0
BARGE_IN_LINE = "Sorry, can you hold on a second?"
_TEST_NUMBER = re.compile(r"^\+1\d{3}55501(\d\d)$")

_NAMES = ("Dana", "Alex", "Jordan", "Priya", "Sam", "Morgan", "Chris", "Taylor", "Maria", "Lee")
# The people's voices (`callfleet.simulator.voices.VOICES`): Piper's joe voice, lower
# and higher than the agent's.
_VOICES = ("joe-low", "joe-high")
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
OPT_OUT_LINES = (
    "I'm not interested. Please take me off your list.",
    "Who is this? Stop calling me, and don't call this number again.",
    "No thanks. Put me on your do not call list, please.",
)
"""What the opt-out people (XX 25-27) say to the caller's first turn, one each."""
_OPT_OUT_AGAIN = "I said, please remove me from your list."
_OPT_OUT_RANGE = range(25, 28)
# Lines with pauses in the middle of a sentence (`[s]`: that many seconds of silence),
# where a listener who ends the turn on silence alone would cut in. The pausing
# people (XX 28-29) say the first six, three each; the agent's benchmark plays all of
# them. Each is said as one sentence (`callfleet.simulator.hesitation`).
PAUSING_LINES = (
    "Yes, [0.5] that's me, and [0.6] what is this about?",
    "Well, I was thinking [0.7] maybe next week, if [0.5] that works for you.",
    "Okay, so [0.8] that's everything then. Goodbye.",
    "Oh, hi. What can I [0.5] do for you?",
    "I'd want to check [0.8] with my wife first, before [0.6] Tuesday.",
    "Right, well, thanks [0.7] for calling. Bye now.",
    "Sorry, who did you [0.6] say was calling?",
    "The thing is, [0.6] we already have [0.5] a plan with another company.",
    "Could you send me [0.7] the details by email, so [0.5] I can read them later?",
    "Hmm, let me think. [0.6] Maybe the [0.5] cheaper one.",
    "I usually [0.7] work until six, so [0.5] evenings are better.",
    "No, that's [0.4] all for now, thank you [0.5] very much.",
)


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
    voice: str = "joe-low"
    greeting: str = ""
    lines: tuple[str, ...] = ()
    barge_in: str | None = None
    beep: bool = True

    @property
    def texts(self) -> tuple[str, ...]:
        """Everything this persona may say, to render ahead of the call."""
        said = (self.greeting, *self.lines, self.barge_in or "")
        return tuple(voiced(text) for text in said if text)


def _human(xx: int) -> Persona:
    rings = 1 + xx % 3
    name = _NAMES[xx % len(_NAMES)]
    voice = _VOICES[xx % len(_VOICES)]
    ring_s, talk_s = rings * RING_CYCLE_S, 20.0 + (xx * 7) % 40
    if xx >= 35:  # picks up and says nothing
        return Persona(Behaviour.HUMAN, ring_s, talk_s, name=name, voice=voice)
    greeting = _GREETINGS[xx % len(_GREETINGS)].format(name=name)
    if xx in _OPT_OUT_RANGE:
        # One ring, and the two voices in turn: these people test the agent's
        # hearing of an opt-out, not the recognizer's limits.
        i = xx - _OPT_OUT_RANGE.start
        lines: tuple[str, ...] = (OPT_OUT_LINES[i], _OPT_OUT_AGAIN, "Goodbye.")
        return Persona(
            Behaviour.HUMAN,
            RING_CYCLE_S,
            talk_s,
            name=name,
            voice=_VOICES[i % len(_VOICES)],
            greeting=greeting,
            lines=lines,
        )
    lines = (
        _OPENERS[xx % len(_OPENERS)],
        _MIDDLES[(xx // 2) % len(_MIDDLES)],
        _CLOSERS[(xx // 3) % len(_CLOSERS)],
    )
    if xx in (28, 29):
        lines = PAUSING_LINES[3 * (xx - 28) : 3 * (xx - 27)]
    barge_in = None
    if xx >= 30:
        barge_in = BARGE_IN_LINE
        lines = (_AFTER_BARGE_IN, *lines[1:])
    return Persona(
        Behaviour.HUMAN,
        ring_s,
        talk_s,
        name=name,
        voice=voice,
        greeting=greeting,
        lines=lines,
        barge_in=barge_in,
    )


def _voicemail(xx: int) -> Persona:
    name = _NAMES[(xx + 4) % len(_NAMES)]  # Sam at 40 and 50
    # The lower voice: tiny.en cuts the end of the long greeting in the faster one.
    voice = _VOICES[0]
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
        Behaviour.VOICEMAIL,
        ring_s=4 * RING_CYCLE_S,
        greeting_s=8.0,
        name=name,
        voice=voice,
        greeting=greeting,
        beep=xx < 50,
    )


def script_lines(*, opt_out: bool) -> tuple[str, ...]:
    """Every distinct line the simulator's people and voicemail boxes say: those of the
    opt-out people (their opt-out lines, `opt_out=True`) or all the others. The
    opt-out detector's hit and false-positive rates are measured on these."""
    said: dict[str, None] = {}
    for xx in range(100):
        persona = persona_for(f"+1212555{xx + 100:04d}")
        if xx in _OPT_OUT_RANGE:
            if opt_out:
                said[persona.lines[0]] = None
                said[persona.lines[1]] = None
            else:
                said.update(dict.fromkeys((persona.greeting, persona.lines[2])))
            continue
        if not opt_out:
            said.update(dict.fromkeys(persona.texts))
    if not opt_out:  # every script line, also those no current number happens to say
        for line in (*_OPENERS, *_MIDDLES, *_CLOSERS, _AFTER_BARGE_IN, BARGE_IN_LINE):
            said[line] = None
    return tuple(said)


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

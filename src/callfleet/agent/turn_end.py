"""The end of the callee's turn: Smart Turn, and a greeting answered at once.

Smart Turn (pipecat's `TurnAnalyzerUserTurnStopStrategy` with our shared model)
judges each pause of the callee's speech: a turn it hears as finished ends at the
pause, one it hears as unfinished waits up to the call's speech timeout. A phone
greeting often ends on a rising "Hello?", which the model hears as unfinished, so
the callee waited out the whole timeout in silence: the dead air right after
"Hello?" that people complain about. `GreetingTurnStop` ends the callee's first
turn as soon as its words are transcribed when they are a bare greeting
(`is_bare_greeting`): a few words that greet or that the answering-machine
detector hears as a person's. Any later turn, and a first turn that is more than
a greeting, is Smart Turn's to judge.

It relies on the state pipecat 1.14's strategy keeps (`_vad_user_speaking`,
`_vad_stopped`, `_turn_complete`); pipecat is pinned, and the agent's tests run
the strategy on real speech.
"""

from __future__ import annotations

import re

import callfleet.agent._pipecat  # noqa: F401  (pipecat's logging set up before its import)

# isort: split

from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer
from pipecat.frames.frames import TranscriptionFrame
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

from callfleet.agent.amd import words_say
from callfleet.telephony.carrier import AnsweredBy

__all__ = ["GreetingTurnStop", "is_bare_greeting"]

MAX_GREETING_WORDS = 6
_GREETS = re.compile(
    r"^(hello|hallo|hi|hey|hiya|yes|yeah|yep|yup|good (morning|afternoon|evening)|speaking)\b"
)


def is_bare_greeting(text: str) -> bool:
    """Whether the words are only a person's greeting: "Hello?", "Yes?", "Hi, Dana
    speaking." (at most `MAX_GREETING_WORDS` words, none of a machine's)."""
    lowered = " ".join(text.lower().replace("’", "'").split())
    words = re.findall(r"[a-z']+", lowered)
    if not words or len(words) > MAX_GREETING_WORDS:
        return False
    said = words_say(lowered)
    if said is AnsweredBy.VOICEMAIL:
        return False
    return said is AnsweredBy.HUMAN or _GREETS.match(" ".join(words)) is not None


class GreetingTurnStop(TurnAnalyzerUserTurnStopStrategy):  # type: ignore[no-untyped-call]
    """Smart Turn, except that a bare greeting as the callee's first turn ends that
    turn once it is transcribed and the callee has stopped speaking."""

    def __init__(self, *, turn_analyzer: BaseTurnAnalyzer) -> None:
        super().__init__(turn_analyzer=turn_analyzer)
        self._first_turn = True

    async def handle_user_turn_stopped(self) -> None:
        self._first_turn = False
        await super().handle_user_turn_stopped()  # type: ignore[no-untyped-call]  # unannotated

    async def _handle_transcription(self, frame: TranscriptionFrame) -> None:
        await super()._handle_transcription(frame)
        if not self._first_turn or self._vad_user_speaking or not self._vad_stopped:
            return
        if is_bare_greeting(frame.text):
            self._first_turn = False
            self._turn_complete = True
            await self.trigger_user_turn_stopped()

"""The end of the callee's turn: Smart Turn, a greeting answered at once, and a
sentence left hanging waited for.

Smart Turn (pipecat's `TurnAnalyzerUserTurnStopStrategy` with our shared model)
judges each pause of the callee's speech: a turn it hears as finished ends at the
pause, one it hears as unfinished waits up to the call's speech timeout. Two things
it cannot hear on phone audio are read from the pause's transcript instead
(`CalleeTurnStop`):

- A phone greeting often ends on a rising "Hello?", which the model hears as
  unfinished, so the callee waited out the whole timeout in silence: the dead air
  right after "Hello?" that people complain about. A bare greeting as the callee's
  first words (`is_bare_greeting`: a few words that greet, or that the
  answering-machine detector hears as a person's) ends that turn as soon as it is
  transcribed.
- A person who pauses mid-sentence ("I'd want to check with my wife first,
  before ... Tuesday") is often heard as finished, and the agent cut in. When the
  words before the pause cannot end a sentence (`sounds_unfinished`: a trailing
  "and", "if", "the", "um", ", before", a comma or "..."), the turn waits for more
  speech up to the speech timeout, which stays the upper bound, as for a turn
  Smart Turn hears as unfinished.

Any other turn is Smart Turn's to judge. It relies on the state pipecat 1.14's
strategy keeps (`_vad_user_speaking`, `_vad_stopped`, `_turn_complete`, `_text`);
pipecat is pinned, and the agent's tests run the strategy on real speech.
"""

from __future__ import annotations

import asyncio
import re
import time

import callfleet.agent._pipecat  # noqa: F401  (pipecat's logging set up before its import)

# isort: split

from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer
from pipecat.frames.frames import TranscriptionFrame, VADUserStoppedSpeakingFrame
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

from callfleet.agent.amd import words_say
from callfleet.telephony.carrier import AnsweredBy

__all__ = ["CalleeTurnStop", "is_bare_greeting", "sounds_unfinished"]

MAX_GREETING_WORDS = 6
_GREETS = re.compile(
    r"^(hello|hallo|hi|hey|hiya|yes|yeah|yep|yup|good (morning|afternoon|evening)|speaking)\b"
)


def is_bare_greeting(text: str) -> bool:
    """Whether the words are only a person's greeting: "Hello?", "Yes?", "Hi, Dana
    speaking." (at most `MAX_GREETING_WORDS` words, none of a machine's, and not left
    hanging: "Oh, hi, what can I?" waits for the rest)."""
    lowered = " ".join(text.lower().replace("’", "'").split())
    words = re.findall(r"[a-z']+", lowered)
    if not words or len(words) > MAX_GREETING_WORDS or sounds_unfinished(text):
        return False
    said = words_say(lowered)
    if said is AnsweredBy.VOICEMAIL:
        return False
    return said is AnsweredBy.HUMAN or _GREETS.match(" ".join(words)) is not None


# Words no sentence ends on, not even a question: articles, possessives, the
# conjunctions that join two clauses, fillers, and the pronouns that open a clause
# (Whisper writes a fragment cut at a pause as a whole sentence: "What can I?").
_NEVER_LAST = frozenset(
    [
        *("and", "but", "nor", "because", "the", "a", "an", "my", "your", "our", "their"),
        *("its", "i", "i'd", "i'm", "we", "we're", "you're", "they're", "there's", "um"),
        *("uh", "erm", "er", "uhm"),
    ]
)
# Words a statement does not end on, though a question may ("Who is it for?").
_HANGING_WORDS = _NEVER_LAST | frozenset(
    ["or", "if", "unless", "whether", "although", "than", "whereas", "of", "with", "for"]
    + ["from", "into", "mm", "hmm"]
)
# Words that end sentences now and then ("I think so.", "I've heard that before.")
# but not after a comma ("Okay, so ...").
_HANGING_AFTER_COMMA = re.compile(r",\s*(so|before|after|until)\W*$")
_TRAILING_MARK = re.compile(r"(,|;|:|-|\u2014|\u2013|\.\.\.|\u2026)\s*$")


def sounds_unfinished(text: str) -> bool:
    """Whether a transcript stops where a sentence cannot end: on a comma, a dash or
    "...", on a word like "and", "the" or "um", or on ", so" or ", before"."""
    stripped = text.strip().replace("\u2019", "'")
    lowered = stripped.lower()
    words = re.findall(r"[a-z']+", lowered)
    if not words:
        return False
    if stripped.endswith(("?", "!")):
        return words[-1] in _NEVER_LAST
    if _TRAILING_MARK.search(stripped):
        return True
    return words[-1] in _HANGING_WORDS or _HANGING_AFTER_COMMA.search(lowered) is not None


class CalleeTurnStop(TurnAnalyzerUserTurnStopStrategy):  # type: ignore[no-untyped-call]
    """Smart Turn, except that a bare greeting as the callee's first turn ends that
    turn once it is transcribed and the callee has stopped speaking, and a pause
    whose words leave the sentence hanging waits for more speech up to the turn
    analyzer's upper bound (`max_wait_s`, the call's speech timeout, counted from the
    end of the callee's speech)."""

    def __init__(self, *, turn_analyzer: BaseTurnAnalyzer, max_wait_s: float) -> None:
        super().__init__(turn_analyzer=turn_analyzer)
        self._max_wait_s = max_wait_s
        self._first_turn = True
        self._speech_ended = 0.0  # wall time the callee's speech ended (VAD's clock)
        self._hold: asyncio.Task[None] | None = None
        self._held_out = False  # the hold ran to the upper bound: the turn may end

    async def handle_user_turn_stopped(self) -> None:
        self._first_turn = False
        await super().handle_user_turn_stopped()  # type: ignore[no-untyped-call]  # unannotated

    async def _discard_pending_end_of_turn(self) -> None:
        # the callee spoke again, or a turn began or ended: any hold is over
        if self._hold is not None:
            await self.task_manager.cancel_task(self._hold)
            self._hold = None
        self._held_out = False
        await super()._discard_pending_end_of_turn()  # type: ignore[no-untyped-call]

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        self._speech_ended = frame.timestamp - frame.stop_secs
        await super()._handle_vad_user_stopped_speaking(frame)

    async def _handle_transcription(self, frame: TranscriptionFrame) -> None:
        await super()._handle_transcription(frame)
        if not self._first_turn or self._vad_user_speaking or not self._vad_stopped:
            return
        if is_bare_greeting(frame.text):
            self._first_turn = False
            self._turn_complete = True
            await self.trigger_user_turn_stopped()

    async def _maybe_trigger_user_turn_stopped(self) -> None:
        hanging = self._turn_complete and not self._held_out and sounds_unfinished(self._text)
        if hanging and not self._vad_user_speaking:
            if self._hold is None:
                wait = max(0.0, self._speech_ended + self._max_wait_s - time.time())
                self._hold = self.task_manager.create_task(
                    self._hold_then_end(wait), f"{self}::hold"
                )
            return
        await super()._maybe_trigger_user_turn_stopped()  # type: ignore[no-untyped-call]

    async def _hold_then_end(self, wait: float) -> None:
        """The upper bound reached with no more speech: the turn ends as it stands."""
        try:
            await asyncio.sleep(wait)
        except asyncio.CancelledError:
            return
        self._hold = None
        self._held_out = True
        await self._maybe_trigger_user_turn_stopped()

"""End of turn by meaning: pipecat's Smart Turn v3.2 model, loaded once per process.

Smart Turn reads the last seconds of the callee's voice (intonation, the words'
rhythm) and says whether the turn is complete. The agent runs it when the VAD
hears 0.4 s of quiet: "Sure, that sounds good." ends there, "so I was thinking,
um..." waits, up to the call's speech timeout (from `interruption_threshold`),
which stays the upper bound. The ONNX file ships in pipecat's wheel (pinned, and
checked like the other models in `callfleet.agent.models`); one inference session
serves every call (onnxruntime's `run` may be called from several threads), and
each call's analyzer runs it on a thread of its own.

One inference takes about 0.13 s on this 2-core machine, and it used to start only
when the VAD ended the speech: after the transcript (started in the pause, see
`LocalWhisperSTT`) it was the last thing the callee waited for. So it starts in the
pause too (`SharedSmartTurn`): once the voice has been quiet `EARLY_AFTER_S`, on the
audio so far with that quiet drawn out to the VAD's full stop (the model's verdict
depends on how much quiet follows the words: "I would like to hear more about the
price." is 10 % complete after 0.2 s of quiet and 73 % after 0.4 s). If the VAD then
ends the speech with nothing heard since, that verdict is the turn's.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]
from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

from callfleet.agent.models import SMART_TURN_V3, verified_path
from callfleet.agent.providers.pauses import PauseDetector, heard_all_speech

__all__ = ["SMART_TURN_FILE", "SharedSmartTurn", "load_smart_turn"]

SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
EARLY_AFTER_S = 0.2
"""Quiet after which the verdict starts: late enough to skip most pauses inside a
sentence, early enough for its ~0.13 s to end before the VAD's 0.4 s."""
_EARLY_AT_ONCE = threading.BoundedSemaphore(1)
"""Early verdicts running in the process at once: a guess never takes more than one
core's worth from the calls' other work (a busy machine makes fewer guesses)."""
_session: ort.InferenceSession | None = None
_lock = threading.Lock()


def load_smart_turn() -> ort.InferenceSession:
    """The process's Smart Turn session (verified and loaded on first use)."""
    global _session
    with _lock:
        if _session is None:
            options = ort.SessionOptions()
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.inter_op_num_threads = 1
            options.intra_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            path = verified_path(SMART_TURN_V3) / SMART_TURN_FILE
            _session = ort.InferenceSession(str(path), sess_options=options)
        return _session


@dataclass(eq=False)
class _Early:
    """A verdict started in a pause: on the first `frames` of the buffer."""

    frames: int
    future: Future[tuple[EndOfTurnState, Any]]


class SharedSmartTurn(LocalSmartTurnAnalyzerV3):
    """pipecat's local Smart Turn analyzer on the process's one session, starting its
    verdict in the callee's pause when `vad_stop_s` (the VAD's quiet before it ends
    speech) is given."""

    def __init__(self, *, max_wait_s: float, vad_stop_s: float | None = None) -> None:
        BaseSmartTurn.__init__(self, params=SmartTurnParams(stop_secs=max_wait_s))
        self._log_data = False
        self._session = load_smart_turn()
        self._vad_stop_s = vad_stop_s
        self._pauses: PauseDetector | None = None
        self._early: _Early | None = None
        self._last_early: Future[Any] | None = None  # one at a time: never a backlog
        self._quiet_tail: list[np.ndarray] = []  # the pause's frames so far
        self.early_used = 0
        """Verdicts of this call that were ready when the VAD ended the speech."""

    def append_audio(self, buffer: bytes, is_speech: bool) -> EndOfTurnState:
        state = super().append_audio(buffer, is_speech)
        if self._vad_stop_s is None or not is_speech or state == EndOfTurnState.COMPLETE:
            return state
        if self._pauses is None:
            self._pauses = PauseDetector(self.sample_rate)
        if not self._pauses.feed(buffer):
            self._drop_early()  # spoken over: its verdict is moot
            self._quiet_tail = []
            return state
        self._quiet_tail.append(np.frombuffer(buffer, dtype=np.int16))
        if self._early is None and self._pauses.quiet_s >= EARLY_AFTER_S:
            self._start_early()
        return state

    def _start_early(self) -> None:
        """The verdict on the audio so far, its quiet drawn out to the VAD's stop."""
        if self._vad_stop_s is None or not self._speech_start_time:
            return
        if self._last_early is not None and not self._last_early.done():
            return  # the last pause's verdict still runs: this call's thread is busy
        if not _EARLY_AT_ONCE.acquire(blocking=False):
            return  # another call's guess is running: this turn waits for the VAD
        heard = sum(len(frame) for frame in self._quiet_tail)
        missing = int(self._vad_stop_s * self.sample_rate) - heard
        snapshot = list(self._audio_buffer)
        if missing > 0:  # more of the line's quiet: its quietest frame (the line's floor,
            # not the fading end of the last word, which repeated sounds like more voice)
            floor = min(self._quiet_tail, key=lambda f: float(np.mean(f.astype(np.float32) ** 2)))
            snapshot.append((time.monotonic(), np.resize(floor, missing)))
        try:
            future = self._model_executor.submit(self._process_speech_segment, snapshot)
        except RuntimeError:  # the executor was shut down
            _EARLY_AT_ONCE.release()
            return
        future.add_done_callback(lambda _: _EARLY_AT_ONCE.release())
        self._early = _Early(frames=len(self._audio_buffer), future=future)
        self._last_early = future

    def _drop_early(self) -> None:
        if self._early is not None:
            self._early.future.cancel()  # if it has not started
            self._early = None

    def _covers(self, early: _Early) -> bool:
        """Whether the early verdict heard all of what the VAD calls speech."""
        if self._vad_stop_s is None:
            return False
        since = sum(len(chunk) for _, chunk in self._audio_buffer[early.frames :])
        return heard_all_speech(since / self.sample_rate, self._vad_stop_s)

    async def analyze_end_of_turn(self) -> tuple[EndOfTurnState, Any]:
        early, self._early = self._early, None
        if early is None or not self._covers(early):
            if early is not None:
                early.future.cancel()
            return await super().analyze_end_of_turn()
        state, result = await asyncio.wrap_future(early.future)
        self.early_used += 1
        if state == EndOfTurnState.COMPLETE:
            self._clear(state)
        return state, result

    def _clear(self, turn_state: EndOfTurnState) -> None:
        super()._clear(turn_state)
        self._drop_early()
        self._quiet_tail = []
        if self._pauses is not None:
            self._pauses.reset()


def warm_smart_turn() -> None:
    """One inference, so a first call's first turn costs what later ones do."""
    session = load_smart_turn()
    features = np.zeros((1, 80, 800), dtype=np.float32)
    session.run(None, {"input_features": features})

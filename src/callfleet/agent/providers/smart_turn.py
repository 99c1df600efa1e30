"""End of turn by meaning: pipecat's Smart Turn v3.2 model, loaded once per process.

Smart Turn reads the last seconds of the callee's voice (intonation, the words'
rhythm) and says whether the turn is complete. The agent runs it when the VAD
hears 0.4 s of quiet: "Sure, that sounds good." ends there, "so I was thinking,
um..." waits, up to the call's speech timeout (from `interruption_threshold`),
which stays the upper bound. The ONNX file ships in pipecat's wheel (pinned, and
checked like the other models in `callfleet.agent.models`); one inference session
serves every call (onnxruntime's `run` may be called from several threads), and
each call's analyzer runs it on a thread of its own.
"""

from __future__ import annotations

import threading

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

from callfleet.agent.models import SMART_TURN_V3, verified_path

__all__ = ["SMART_TURN_FILE", "SharedSmartTurn", "load_smart_turn"]

SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
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


class SharedSmartTurn(LocalSmartTurnAnalyzerV3):
    """pipecat's local Smart Turn analyzer on the process's one session."""

    def __init__(self, *, max_wait_s: float) -> None:
        BaseSmartTurn.__init__(self, params=SmartTurnParams(stop_secs=max_wait_s))
        self._log_data = False
        self._session = load_smart_turn()


def warm_smart_turn() -> None:
    """One inference, so a first call's first turn costs what later ones do."""
    session = load_smart_turn()
    features = np.zeros((1, 80, 800), dtype=np.float32)
    session.run(None, {"input_features": features})

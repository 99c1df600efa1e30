"""Import pipecat quietly: two narrow warning filters and its logs sent to structlog.

Importing pipecat 1.14 raises two DeprecationWarnings that are pipecat's own
business (it imports `audioop`, deprecated in Python 3.11, and subclasses its own
deprecated `AudioContextTTSService`). The test suite turns warnings into errors,
so these two, and only these two, are silenced, by message, while pipecat's
modules are first imported. Every agent module imports this one before pipecat.

pipecat logs through loguru at DEBUG by default, a line per frame event; its
records are forwarded to callfleet's structlog logger `pipecat` at WARNING and
above. `forward_pipecat_logs` changes that level: the agent's runtime calls it
with `Settings.pipecat_log_level` (`CALLFLEET_PIPECAT_LOG_LEVEL`, e.g. DEBUG).
"""

from __future__ import annotations

import warnings

import structlog
from loguru import logger as _loguru

__all__ = ["PIPECAT_VERSION", "forward_pipecat_logs"]

log = structlog.get_logger("pipecat")


_EXPECTED = (
    # we set the VAD's stop_secs on purpose (see callfleet.agent.session)
    "differs from the recommended default",
)


def _forward(message: object) -> None:
    record = getattr(message, "record", None)
    if record is None or any(text in record["message"] for text in _EXPECTED):
        return
    log.log(_standard_level(record["level"].no), record["message"])


def _standard_level(loguru_level: int) -> int:
    """loguru's level number as one structlog knows (TRACE counts as DEBUG, SUCCESS as INFO)."""
    return min(50, max(10, loguru_level // 10 * 10))


_loguru.remove()
_sink = _loguru.add(_forward, level="WARNING", format="{message}")


def forward_pipecat_logs(level: str) -> None:
    """Forward pipecat's records at `level` (a loguru level name) and above."""
    global _sink
    _loguru.remove(_sink)
    _sink = _loguru.add(_forward, level=level, format="{message}")


with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", message="'audioop' is deprecated", category=DeprecationWarning
    )
    warnings.filterwarnings(
        "ignore", message="`AudioContextTTSService` is deprecated", category=DeprecationWarning
    )
    import pipecat
    import pipecat.audio.utils
    import pipecat.services.tts_service  # noqa: F401

PIPECAT_VERSION: str = getattr(pipecat, "__version__", "unknown")

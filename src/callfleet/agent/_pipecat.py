"""Import pipecat quietly: two narrow warning filters and its logs sent to `logging`.

Importing pipecat 1.14 raises two DeprecationWarnings that are pipecat's own
business (it imports `audioop`, deprecated in Python 3.11, and subclasses its own
deprecated `AudioContextTTSService`). The test suite turns warnings into errors,
so these two, and only these two, are silenced, by message, while pipecat's
modules are first imported. Every agent module imports this one before pipecat.

pipecat logs through loguru at DEBUG by default, a line per frame event; its
records are forwarded to the standard `logging` logger `pipecat` at WARNING and
above (`CALLFLEET_PIPECAT_LOG_LEVEL` changes that level, e.g. to DEBUG), where
callfleet's logging configuration applies.
"""

from __future__ import annotations

import logging
import os
import warnings

from loguru import logger as _loguru

__all__ = ["PIPECAT_VERSION"]

_log = logging.getLogger("pipecat")


_EXPECTED = (
    # we set the VAD's stop_secs on purpose (see callfleet.agent.session)
    "differs from the recommended default",
)


def _forward(message: object) -> None:
    record = getattr(message, "record", None)
    if record is None or any(text in record["message"] for text in _EXPECTED):
        return
    _log.log(record["level"].no, "%s", record["message"])


_loguru.remove()
_loguru.add(
    _forward, level=os.environ.get("CALLFLEET_PIPECAT_LOG_LEVEL", "WARNING"), format="{message}"
)

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

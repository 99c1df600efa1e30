"""Structured logs (structlog): key=value lines with call and batch ids.

httpx and httpcore log every request's full URL, query string included, at INFO and
DEBUG: a tenant's tool or `dynamic_data` URL may carry a token there. They log from
WARNING only, whatever callfleet's own level.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(file=sys.stderr)


def configure_logging(level: str = "info") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logging.basicConfig(level=numeric, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(
                key_order=["timestamp", "level", "event"], drop_missing=True
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # Standard error, as the stdlib's handler writes: standard output carries the
        # commands' own results (`callfleet demo --json`). Looked up at each logger's
        # creation, not once, so a replaced sys.stderr (pytest's capture) is followed.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )

"""`ReadyAudio`: lines synthesised before they are needed, while the call rings.

A call's `first_sentence`, `voicemail_message`, scripted lines and closing line
are known when it is dialled. `prepare(lines)` starts synthesising them on one
background thread as soon as the carrier dials (`Talker.prepare`), so by the time
the callee says "Hello?" the first sentence is audio already, not a request to
Piper. A TTS service asks `take(line)` first: the prepared audio (waiting for it if
it is still being made, never making it twice), or None to synthesise as usual.

The cache is keyed by the text as it is synthesised (after the pronunciation
guide) and holds at most `max_bytes` of audio, least recently used out first: the
calls of a batch usually share their lines, so one synthesis serves them all. One
worker thread, so preparing never takes more than one of the voice's processes
from the live calls' replies.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

from pipecat.utils.string import match_endofsentence

__all__ = ["ReadyAudio", "sentences"]

log = structlog.get_logger(__name__)

Synthesize = Callable[[str], tuple[bytes, int]]


def sentences(line: str) -> list[str]:
    """The sentences pipecat's text aggregator hands a TTS service, one by one, when the
    line comes as an LLM's (or the scripted policy's) reply."""
    out: list[str] = []
    rest = line
    while rest.strip():
        end = match_endofsentence(rest)
        if end <= 0:
            out.append(rest.strip())
            break
        out.append(rest[:end].strip())
        rest = rest[end:]
    return out


class ReadyAudio:
    def __init__(self, synthesize: Synthesize, *, max_bytes: int = 16 * 1024 * 1024) -> None:
        self._synthesize = synthesize
        self.max_bytes = max_bytes
        self._lines: OrderedDict[str, Future[tuple[bytes, int]]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ready-audio")
        self.hits = 0
        """Lines a call spoke from prepared audio."""
        self.misses = 0

    def prepare(self, lines: Iterable[str]) -> None:
        """Start synthesising each line not prepared yet (returns at once)."""
        with self._lock:
            for line in lines:
                known = self._lines.get(line)
                if known is not None and not known.cancelled():
                    self._lines.move_to_end(line)
                    continue
                self._lines[line] = self._pool.submit(self._synthesize, line)
            self._trim()

    async def take(self, line: str) -> tuple[bytes, int] | None:
        """The prepared audio of `line` (awaiting it if under way), or None."""
        with self._lock:
            future = self._lines.get(line)
            if future is None:
                self.misses += 1
                return None
            self._lines.move_to_end(line)
        try:
            # Shielded: a call whose TTS is interrupted while it waits must not cancel
            # the synthesis other calls share.
            audio = await asyncio.shield(asyncio.wrap_future(future))
        except Exception:
            log.warning("a prepared line failed to synthesise", exc_info=True)
            with self._lock:
                self._lines.pop(line, None)
            return None
        self.hits += 1
        return audio

    def _trim(self) -> None:
        for line in [line for line, f in self._lines.items() if f.cancelled()]:
            del self._lines[line]
        done = [(line, f) for line, f in self._lines.items() if f.done() and not f.exception()]
        total = sum(len(f.result()[0]) for _, f in done)
        for line, future in done:  # oldest first
            if total <= self.max_bytes:
                break
            total -= len(future.result()[0])
            del self._lines[line]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

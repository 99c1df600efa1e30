"""A small reorder/jitter buffer for fixed 20 ms frames, keyed by RTP sequence number.

Playout starts once `depth` frames are queued (about 60 ms by default) and then
takes one frame per tick. A missing frame yields `None` so the caller can conceal
it; frames that arrive after their turn are dropped and counted as late. An empty
buffer re-primes, so a silent sender does not grow the delay. Sequence numbers
wrap at 2^16.
"""

from __future__ import annotations

__all__ = ["JitterBuffer"]


class JitterBuffer:
    def __init__(self, depth: int = 3, capacity: int = 50) -> None:
        self.depth = depth
        self.capacity = capacity
        self._frames: dict[int, bytes] = {}
        self._next: int | None = None
        self._playing = False
        self.late = 0
        self.lost = 0

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, sequence: int, payload: bytes) -> None:
        if self._next is None:
            self._next = sequence
        ahead = (sequence - self._next) & 0xFFFF
        if ahead >= 0x8000:
            self.late += 1
            return
        if ahead >= self.capacity:  # the sender jumped (restart): start over
            self._frames.clear()
            self._next = sequence
            self._playing = False
        self._frames[sequence] = payload

    def pop(self) -> bytes | None:
        """The next frame in order; None while priming, on loss, or when empty."""
        if self._next is None:
            return None
        if not self._playing:
            if len(self._frames) < self.depth:
                return None
            self._playing = True
        if not self._frames:
            self._playing = False
            return None
        frame = self._frames.pop(self._next, None)
        if frame is None:
            self.lost += 1
        self._next = (self._next + 1) & 0xFFFF
        return frame

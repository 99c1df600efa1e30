"""The states of a call and of a batch, and the moves allowed between them.

Every value here is a string stored in the database and shown by the API exactly
as it is spelled: the members are `StrEnum`s, so they are `str` and bind, compare
and serialise as their value. A call has five columns of state:

- `state` (`CallState`) drives dispatch and is never shown:
  queued -> admitted -> dialing -> live -> ended, with a retry going from dialing or
  live back to queued (attempt + 1) and a cancel ending a call not yet dialled.
- `queue_status` (`QueueStatus`) is the API's view of the same life cycle.
- `status` (`Outcome`) is how the last attempt ended; `answered_by` (`AnsweredBy`)
  and `call_ended_by` (`EndedBy`) say who answered and who hung up.
- `postcall_state` (`PostcallState`): NULL when there is no post-call work, else
  pending until the summary is recorded (done) or given up on (failed).

A batch's `status` (`BatchStatus`) is running until it is stopped or every call in
it is settled; a running batch may be paused (the hopper admits none of its calls)
and resumed.

The moves are data: `CallMoves` (tabled as `CALL_STATE_MOVES`), `QUEUE_STATUS_MOVES`,
`POSTCALL_MOVES` and `BATCH_MOVES`. `dispatch.lifecycle` takes the states each of its
conditional UPDATEs may start from out of `CallMoves`, and `may_move` answers whether
one state may follow another.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "ACTIVE_STATES",
    "BATCH_MOVES",
    "CALL_STATE_MOVES",
    "CALL_STATUS_FILTERS",
    "DIALLED_STATES",
    "POSTCALL_MOVES",
    "QUEUE_STATUS_MOVES",
    "AnsweredBy",
    "BatchStatus",
    "CallMove",
    "CallMoves",
    "CallState",
    "EndedBy",
    "Outcome",
    "PostcallState",
    "QueueStatus",
    "may_move",
    "reached_from",
]


class CallState(enum.StrEnum):
    """Where a call is in dispatch (the `calls.state` column)."""

    QUEUED = "queued"
    """Waiting for its `not_before`, a free slot and a caller-ID token."""
    ADMITTED = "admitted"
    """Handed to the engine; a worker has not claimed it yet."""
    DIALING = "dialing"
    """Claimed by a worker under a lease; the INVITE is out."""
    LIVE = "live"
    """Answered; the conversation is running."""
    ENDED = "ended"
    """Terminal: no attempt follows (post-call work may still be pending)."""


class QueueStatus(enum.StrEnum):
    """The API's `queue_status`: the hosted product's life cycle names.

    The hosted product also names `new`, `pre_queue_error`, `queue_error` and
    `complete_error`; this deployment never stores them (a call that cannot be
    queued is refused at submission), so they are not members.
    """

    QUEUED = "queued"
    ALLOCATED = "allocated"
    STARTED = "started"
    COMPLETE = "complete"
    CALL_ERROR = "call_error"


class Outcome(enum.StrEnum):
    """How a call attempt ended; the values are the API's `status` values."""

    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    DECLINED = "declined"
    FAILED = "failed"
    CANCELED = "canceled"
    VOICEMAIL = "voicemail"


class AnsweredBy(enum.StrEnum):
    """Who picked up (`answered_by`); NULL when detection was off."""

    HUMAN = "human"
    VOICEMAIL = "voicemail"
    UNKNOWN = "unknown"
    NO_ANSWER = "no-answer"


class EndedBy(enum.StrEnum):
    """Which side hung up (`call_ended_by`)."""

    ASSISTANT = "ASSISTANT"
    USER = "USER"


class PostcallState(enum.StrEnum):
    """The post-call work of an ended call (`postcall_state`); NULL: there is none."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


CALL_STATUS_FILTERS: tuple[str, ...] = (
    *(state.value for state in CallState if state != CallState.ENDED),
    *(outcome.value for outcome in Outcome),
)
"""What `GET /v1/calls?status=` takes: a call still in dispatch by its `CallState`
(queued, admitted, dialing, live), or an ended call by its `status` (`Outcome`)."""


class BatchStatus(enum.StrEnum):
    """A batch's `status`."""

    RUNNING = "running"
    PAUSED = "paused"
    """Paused by the API: its queued calls stay queued and none is admitted; calls
    already admitted or live finish. Resuming makes it running again."""
    STOPPED = "stopped"
    """Stopped by the API: its queued calls were cancelled; it still completes."""
    COMPLETED = "completed"


ACTIVE_STATES = (CallState.ADMITTED, CallState.DIALING, CallState.LIVE)
"""The states that hold one of the account's concurrency slots."""
DIALLED_STATES = (CallState.DIALING, CallState.LIVE)
"""The states in which a worker holds the call's lease."""


@dataclass(frozen=True)
class CallMove:
    """One conditional UPDATE of `calls.state`: from any of `sources` to `target`."""

    sources: tuple[CallState, ...]
    target: CallState


class CallMoves:
    """Every move of `calls.state`, named after the step of dispatch that makes it."""

    ADMIT = CallMove((CallState.QUEUED,), CallState.ADMITTED)
    """The hopper admits a due call."""
    CLAIM = CallMove((CallState.ADMITTED,), CallState.DIALING)
    """A worker claims the admitted attempt and dials."""
    ANSWER = CallMove((CallState.DIALING,), CallState.LIVE)
    """The callee answered."""
    RETRY = CallMove(DIALLED_STATES, CallState.QUEUED)
    """The attempt ended and another one is due (attempt + 1)."""
    END = CallMove(DIALLED_STATES, CallState.ENDED)
    """The attempt ended and it was the last (or was interrupted, or timed out)."""
    CANCEL = CallMove((CallState.QUEUED, CallState.ADMITTED), CallState.ENDED)
    """Stopped before it was dialled (call or batch stopped through the API)."""

    ALL = (ADMIT, CLAIM, ANSWER, RETRY, END, CANCEL)


QUEUE_STATUS_MOVES: Mapping[QueueStatus, frozenset[QueueStatus]] = {
    # Each follows a move of `state`: ADMIT, CLAIM, RETRY, END (either way), CANCEL.
    QueueStatus.QUEUED: frozenset({QueueStatus.ALLOCATED, QueueStatus.COMPLETE}),
    QueueStatus.ALLOCATED: frozenset({QueueStatus.STARTED, QueueStatus.COMPLETE}),
    QueueStatus.STARTED: frozenset(
        {QueueStatus.QUEUED, QueueStatus.COMPLETE, QueueStatus.CALL_ERROR}
    ),
}
"""The allowed moves of `queue_status`; `complete` and `call_error` are terminal."""

POSTCALL_MOVES: Mapping[PostcallState, frozenset[PostcallState]] = {
    # `pending` is set by the move that ends the call (CallMoves.END).
    PostcallState.PENDING: frozenset({PostcallState.DONE, PostcallState.FAILED}),
}
"""The allowed moves of `postcall_state`."""

BATCH_MOVES: Mapping[BatchStatus, frozenset[BatchStatus]] = {
    # A stopped batch stays `stopped` when its last call settles. A paused batch
    # completes only when its last call settles (it has no queued call left).
    BatchStatus.RUNNING: frozenset(
        {BatchStatus.PAUSED, BatchStatus.STOPPED, BatchStatus.COMPLETED}
    ),
    BatchStatus.PAUSED: frozenset(
        {BatchStatus.RUNNING, BatchStatus.STOPPED, BatchStatus.COMPLETED}
    ),
}
"""The allowed moves of a batch's `status`."""


def _call_table(moves: Iterable[CallMove]) -> Mapping[CallState, frozenset[CallState]]:
    table: dict[CallState, set[CallState]] = {}
    for move in moves:
        for source in move.sources:
            table.setdefault(source, set()).add(move.target)
    return {source: frozenset(targets) for source, targets in table.items()}


CALL_STATE_MOVES: Mapping[CallState, frozenset[CallState]] = _call_table(CallMoves.ALL)
"""The allowed moves of `calls.state` as a table, from the named moves above."""

_S = TypeVar("_S", bound=enum.StrEnum)


def may_move(table: Mapping[_S, frozenset[_S]], source: _S, target: _S) -> bool:
    """Whether `table` allows a state to go from `source` to `target`."""
    return target in table.get(source, frozenset())


def reached_from(table: Mapping[_S, frozenset[_S]], target: _S) -> frozenset[_S]:
    """The states from which `table` allows a move to `target`."""
    return frozenset(source for source, targets in table.items() if target in targets)

"""The state machines of `domain.states`: every move allowed, every other refused,
and the schema's literal values all members."""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Mapping

import pytest
import sqlalchemy as sa

from callfleet.domain.states import (
    ACTIVE_STATES,
    BATCH_MOVES,
    CALL_STATE_MOVES,
    DIALLED_STATES,
    POSTCALL_MOVES,
    QUEUE_STATUS_MOVES,
    AnsweredBy,
    BatchStatus,
    CallMoves,
    CallState,
    EndedBy,
    Outcome,
    PostcallState,
    QueueStatus,
    may_move,
    reached_from,
)
from callfleet.store.tables import batches, calls, metadata

# The moves as a reader of dispatch/ knows them, written out by hand.
EXPECTED: list[tuple[Mapping[enum.StrEnum, frozenset[enum.StrEnum]], set[tuple[str, str]]]] = [
    (
        CALL_STATE_MOVES,  # type: ignore[list-item]
        {
            ("queued", "admitted"),
            ("queued", "ended"),
            ("admitted", "dialing"),
            ("admitted", "ended"),
            ("dialing", "live"),
            ("dialing", "queued"),
            ("dialing", "ended"),
            ("live", "queued"),
            ("live", "ended"),
        },
    ),
    (
        QUEUE_STATUS_MOVES,  # type: ignore[list-item]
        {
            ("queued", "allocated"),
            ("queued", "complete"),
            ("allocated", "started"),
            ("allocated", "complete"),
            ("started", "queued"),
            ("started", "complete"),
            ("started", "call_error"),
        },
    ),
    (POSTCALL_MOVES, {("pending", "done"), ("pending", "failed")}),  # type: ignore[list-item]
    (
        BATCH_MOVES,  # type: ignore[list-item]
        {
            ("running", "paused"),
            ("running", "stopped"),
            ("running", "completed"),
            ("paused", "running"),
            ("paused", "stopped"),
            ("paused", "completed"),
        },
    ),
]
MACHINES = [CallState, QueueStatus, PostcallState, BatchStatus]


@pytest.mark.parametrize(("states", "expected"), zip(MACHINES, EXPECTED, strict=True))
def test_every_allowed_move_is_allowed_and_every_other_refused(
    states: type[enum.StrEnum],
    expected: tuple[Mapping[enum.StrEnum, frozenset[enum.StrEnum]], set[tuple[str, str]]],
) -> None:
    table, pairs = expected
    for source, target in pairs:
        assert may_move(table, states(source), states(target)), (source, target)
    for source, target in itertools.product(states, states):
        if (source.value, target.value) not in pairs:
            assert not may_move(table, source, target), (source, target)


def test_reached_from_is_the_inverse_of_the_table() -> None:
    assert reached_from(CALL_STATE_MOVES, CallState.ENDED) == {
        CallState.QUEUED,
        CallState.ADMITTED,
        CallState.DIALING,
        CallState.LIVE,
    }
    assert reached_from(CALL_STATE_MOVES, CallState.DIALING) == {CallState.ADMITTED}
    assert reached_from(CALL_STATE_MOVES, CallState.QUEUED) == set(DIALLED_STATES)
    assert reached_from(BATCH_MOVES, BatchStatus.RUNNING) == {BatchStatus.PAUSED}


def test_the_named_moves_are_the_table() -> None:
    pairs = {(s, m.target) for m in CallMoves.ALL for s in m.sources}
    assert pairs == {(s, t) for s, ts in CALL_STATE_MOVES.items() for t in ts}
    assert CallMoves.END.sources == DIALLED_STATES == CallMoves.RETRY.sources
    assert set(ACTIVE_STATES) == set(CallState) - {CallState.QUEUED, CallState.ENDED}


def test_terminal_states_have_no_way_out() -> None:
    assert CallState.ENDED not in CALL_STATE_MOVES
    assert QueueStatus.COMPLETE not in QUEUE_STATUS_MOVES
    assert QueueStatus.CALL_ERROR not in QUEUE_STATUS_MOVES
    assert BatchStatus.COMPLETED not in BATCH_MOVES


def test_members_are_their_stored_strings() -> None:
    assert CallState.QUEUED == "queued"
    assert isinstance(CallState.LIVE, str)
    assert f"{Outcome.NO_ANSWER}" == "no-answer"
    assert [a.value for a in AnsweredBy] == ["human", "voicemail", "unknown", "no-answer"]
    assert [e.value for e in EndedBy] == ["ASSISTANT", "USER"]
    assert [o.value for o in Outcome] == [
        "completed",
        "busy",
        "no-answer",
        "declined",
        "failed",
        "canceled",
        "voicemail",
    ]


STATE_COLUMNS: list[tuple[sa.Column[str], type[enum.StrEnum]]] = [
    (calls.c.state, CallState),
    (calls.c.queue_status, QueueStatus),
    (calls.c.status, Outcome),
    (calls.c.answered_by, AnsweredBy),
    (calls.c.call_ended_by, EndedBy),
    (calls.c.postcall_state, PostcallState),
    (batches.c.status, BatchStatus),
]


@pytest.mark.parametrize(("column", "states"), STATE_COLUMNS, ids=lambda x: str(x))
def test_state_columns_hold_every_member(
    column: sa.Column[str], states: type[enum.StrEnum]
) -> None:
    length = column.type.length  # type: ignore[attr-defined]
    assert all(len(member) <= length for member in states)
    default = column.server_default
    if default is not None:
        assert str(default.arg) in {m.value for m in states}  # type: ignore[attr-defined]


def test_literals_in_the_schemas_checks_are_members() -> None:
    by_column = {(c.table.name, c.name): states for c, states in STATE_COLUMNS}
    for table in metadata.tables.values():
        for constraint in table.constraints:
            if not isinstance(constraint, sa.CheckConstraint):
                continue
            text = str(constraint.sqltext)
            for (table_name, column), states in by_column.items():
                if table_name == table.name and re.search(rf"\b{column}\b", text):
                    for literal in re.findall(r"'([^']*)'", text):
                        assert literal in set(states), (table.name, column, literal)


def _state_moves(statement: sa.Update) -> tuple[set[str], str]:
    """The states an UPDATE of `calls` starts from (its WHERE) and the state it writes."""
    params = statement.compile().params
    sources = params["state_1"]
    return set(sources if isinstance(sources, list) else [sources]), params["state"]


def test_dispatchs_updates_make_only_the_moves_of_the_table() -> None:
    from callfleet.dispatch import hopper, lifecycle

    _, retry, terminal = lifecycle._finish_statements(True, False)
    statements = {
        CallMoves.ADMIT: hopper._ADMIT,
        CallMoves.CLAIM: lifecycle._CLAIM,
        CallMoves.ANSWER: lifecycle._ANSWERED,
        CallMoves.RETRY: retry,
        CallMoves.END: terminal,
    }
    for move, statement in statements.items():
        sources, target = _state_moves(statement)
        assert (sources, target) == (set(move.sources), move.target)
        assert all(may_move(CALL_STATE_MOVES, CallState(s), CallState(target)) for s in sources)

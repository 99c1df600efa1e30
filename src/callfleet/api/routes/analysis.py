"""`POST /v1/calls/{id}/analyze` and `POST /v1/batches/{id}/analyze`: LLM answers.

Both need an LLM (`CALLFLEET_LLM_BASE_URL`); without one they answer 400 naming that
setting (after a 404 for an id that is not the account's), even for a batch with no
ended call yet. An LLM that fails is a 502.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool

from callfleet.agent.analysis import (
    AnalysisUnavailable,
    LlmError,
    analyze_transcript,
    require_llm,
)
from callfleet.api.creating import read_json_object
from callfleet.api.deps import AccountDep, RuntimeDep
from callfleet.api.errors import ApiError
from callfleet.domain.errors import FieldError
from callfleet.store.ids import utcnow
from callfleet.store.tables import batches, call_analyses, calls
from callfleet.store.views import call_details

router = APIRouter(tags=["analysis"])


def _need_llm(runtime: Any) -> None:
    try:
        require_llm(runtime.settings)
    except AnalysisUnavailable as exc:
        raise ApiError(400, str(exc)) from None


def _questions(body: dict[str, Any]) -> tuple[str | None, list[list[str]]]:
    goal = body.get("goal")
    questions = body.get("questions")
    errors = []
    if goal is not None and not isinstance(goal, str):
        errors.append(FieldError("goal", "Must be a string."))
    if not isinstance(questions, list) or not questions:
        errors.append(
            FieldError("questions", 'Must be a non-empty array like [["Who answered?", "string"]].')
        )
    else:
        for i, q in enumerate(questions):
            ok = isinstance(q, list) and 1 <= len(q) <= 2 and all(isinstance(x, str) for x in q)
            if not ok:
                errors.append(
                    FieldError(f"questions[{i}]", "Must be [question, answer_type] strings.")
                )
    if errors:
        raise ApiError(400, errors[0].message, errors)
    assert isinstance(questions, list)
    return goal, [list(q) for q in questions]


async def _analyze(
    runtime: Any, goal: str | None, questions: list[list[str]], transcript: str
) -> list[Any]:
    try:
        return await analyze_transcript(runtime.settings, goal, questions, transcript)
    except AnalysisUnavailable as exc:
        raise ApiError(400, str(exc)) from None
    except LlmError as exc:
        raise ApiError(502, f"Analysis failed: {exc}.") from None


def _store(
    runtime: Any,
    account_id: str,
    call_id: str,
    batch_id: str | None,
    goal: str | None,
    questions: list[list[str]],
    answers: list[Any],
) -> None:
    with runtime.db.write() as conn:
        conn.execute(
            sa.insert(call_analyses).values(
                account_id=account_id,
                call_id=call_id,
                batch_id=batch_id,
                goal=goal,
                questions=questions,
                answers=answers,
                created_at=utcnow(),
            )
        )


def _transcript(conn: Connection, call_id: str) -> str:
    details = call_details(conn, call_id)
    return str(details["concatenated_transcript"]) if details else ""


@router.post("/v1/calls/{call_id}/analyze", summary="Analyze a call")
async def analyze_call(
    call_id: str, request: Request, runtime: RuntimeDep, account: AccountDep
) -> dict[str, Any]:
    _raw, body = await read_json_object(request)
    goal, questions = _questions(body)

    def load() -> tuple[str | None, str]:
        with runtime.db.read() as conn:
            row = conn.execute(
                sa.select(calls.c.batch_id).where(
                    calls.c.id == call_id, calls.c.account_id == account.id
                )
            ).first()
            if row is None:
                raise ApiError(404, f"No call {call_id!r} in this account.")
            return row.batch_id, _transcript(conn, call_id)

    batch_id, transcript = await run_in_threadpool(load)
    _need_llm(runtime)
    answers = await _analyze(runtime, goal, questions, transcript)
    await run_in_threadpool(
        _store, runtime, account.id, call_id, batch_id, goal, questions, answers
    )
    return {
        "status": "success",
        "message": "Call analyzed.",
        "answers": [answers],
        "credits_used": 0,
    }


@router.post("/v1/batches/{batch_id}/analyze", summary="Analyze every call of a batch")
async def analyze_batch(
    batch_id: str, request: Request, runtime: RuntimeDep, account: AccountDep
) -> dict[str, Any]:
    _raw, body = await read_json_object(request)
    goal, questions = _questions(body)

    def load() -> list[tuple[str, str]]:
        with runtime.db.read() as conn:
            owned = conn.execute(
                sa.select(batches.c.id).where(
                    batches.c.id == batch_id, batches.c.account_id == account.id
                )
            ).first()
            if owned is None:
                raise ApiError(404, f"No batch {batch_id!r} in this account.")
            ids = [
                r[0]
                for r in conn.execute(
                    sa.select(calls.c.id)
                    .where(calls.c.batch_id == batch_id, calls.c.state == "ended")
                    .order_by(calls.c.seq)
                )
            ]
            return [(i, _transcript(conn, i)) for i in ids]

    items = await run_in_threadpool(load)
    _need_llm(runtime)
    answers: dict[str, list[Any]] = {}
    for call_id, transcript in items:
        answers[call_id] = await _analyze(runtime, goal, questions, transcript)
        await run_in_threadpool(
            _store, runtime, account.id, call_id, batch_id, goal, questions, answers[call_id]
        )
    return {
        "status": "success",
        "message": f"Analyzed {len(answers)} ended calls.",
        "answers": answers,
        "credits_used": 0,
    }

"""`POST /v1/calls/{id}/analyze` and `POST /v1/batches/{id}/analyze`: LLM answers.

Both need an LLM (`CALLFLEET_LLM_BASE_URL`); without one they answer 400 naming that
setting (after a 404 for an id that is not the account's), even for a batch with no
ended call yet. An LLM that fails is a 502.
"""

from __future__ import annotations

from typing import Any

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
from callfleet.api.deps import AccountDep, RuntimeDep, owned
from callfleet.api.errors import ApiError
from callfleet.api.schemas import documented, json_body
from callfleet.api.schemas.analysis import (
    AnalyzeBatchResponse,
    AnalyzeCallResponse,
    AnalyzeRequest,
)
from callfleet.clock import utcnow
from callfleet.domain.errors import FieldError
from callfleet.store.analyses import add_analysis
from callfleet.store.batches import get_batch
from callfleet.store.calls import batch_call_ids, get_call
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
        add_analysis(conn, account_id, call_id, batch_id, goal, questions, answers, utcnow())


def _transcript(conn: Connection, call_id: str) -> str:
    details = call_details(conn, call_id)
    return str(details["concatenated_transcript"]) if details else ""


@router.post(
    "/v1/calls/{call_id}/analyze",
    summary="Analyze a call",
    response_model=None,
    responses=documented(AnalyzeCallResponse, 400, 401, 404, 502),
    openapi_extra=json_body(AnalyzeRequest),
)
async def analyze_call(
    call_id: str, request: Request, runtime: RuntimeDep, account: AccountDep
) -> dict[str, Any]:
    _raw, body = await read_json_object(request)
    goal, questions = _questions(body)

    def load() -> tuple[str | None, str]:
        with runtime.db.read() as conn:
            row = owned(get_call(conn, account.id, call_id), "call", call_id)
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


@router.post(
    "/v1/batches/{batch_id}/analyze",
    summary="Analyze every call of a batch",
    response_model=None,
    responses=documented(AnalyzeBatchResponse, 400, 401, 404, 502),
    openapi_extra=json_body(AnalyzeRequest),
)
async def analyze_batch(
    batch_id: str, request: Request, runtime: RuntimeDep, account: AccountDep
) -> dict[str, Any]:
    _raw, body = await read_json_object(request)
    goal, questions = _questions(body)

    def load() -> list[tuple[str, str]]:
        with runtime.db.read() as conn:
            owned(get_batch(conn, account.id, batch_id), "batch", batch_id)
            ids = batch_call_ids(conn, account.id, batch_id, ended=True)
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

"""Post-call analysis without a network: coercion to the schema's types, the choice of a
disposition, and the LLM request's retries (through httpx's MockTransport)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from callfleet.agent.analysis import (
    BUILTIN_DISPOSITIONS,
    DEFAULT_SUMMARY_PROMPT,
    AnalysisUnavailable,
    LlmError,
    PostcallRequest,
    choose_disposition,
    coerce_value,
    summarize_call,
)
from callfleet.config import Settings
from callfleet.dispatch.postcall import PostcallOptions

SETTINGS = Settings(llm_base_url="http://llm.test/v1", llm_api_key="k", llm_model="m")


@pytest.mark.parametrize(
    ("value", "spec", "expected"),
    [
        ("yes", "boolean", True),
        ("No", "bool", False),
        (1, "boolean", True),
        ("maybe", "boolean", None),
        ("$1,200", "number", 1200),
        ("3.5", "number", 3.5),
        (True, "number", None),
        ("12", "integer", 12),
        (12.0, "int", 12),
        (12.5, "integer", None),
        (42, "string", "42"),
        (False, "string", "false"),
        ("x", "array", ["x"]),
        ([1, 2], "list", [1, 2]),
        ("x", "object", None),
        ({"a": 1}, "object", {"a": 1}),
        ("2026-12-01 09:00", "YYYY-MM-DD HH:MM", "2026-12-01 09:00"),  # a description
        ("yes", "boolean: did they agree to a call back?", True),
        (None, "string", None),
        (["1", "x"], ["integer"], [1, None]),
        ({"n": "2", "extra": 1}, {"n": "integer", "m": "string"}, {"n": 2, "m": None}),
        ("nan", "number", None),
    ],
)
def test_values_are_coerced_to_the_schemas_types(value: Any, spec: Any, expected: Any) -> None:
    assert coerce_value(value, spec) == expected


def test_a_disposition_must_be_one_of_the_allowed_tags() -> None:
    assert choose_disposition("booked", ["BOOKED", "NOT_NOW"]) == "BOOKED"
    assert choose_disposition("not now", ["BOOKED", "NOT_NOW"]) == "NOT_NOW"
    assert choose_disposition("Not-Interested", BUILTIN_DISPOSITIONS) == "NOT_INTERESTED"
    assert choose_disposition("MAYBE", ["BOOKED", "NOT_NOW"]) is None
    assert choose_disposition(None, BUILTIN_DISPOSITIONS) is None
    assert choose_disposition(3, BUILTIN_DISPOSITIONS) is None


def test_the_request_reads_a_calls_fields_and_the_legacy_tag_name() -> None:
    req = PostcallRequest.from_params({"available_tags": ["A", "B"]}, "task", "user: hi")
    assert req.dispositions == ("A", "B")
    assert not req.wants_analysis
    req = PostcallRequest.from_params(
        {"dispositions": ["C"], "analysis_prompt": "Find the budget."}, "", ""
    )
    assert req.dispositions == ("C",)
    assert req.wants_analysis and req.analysis_schema is None
    assert PostcallRequest.from_params({}, "", "").dispositions == BUILTIN_DISPOSITIONS


def _client(answers: list[Any], seen: list[dict[str, Any]]) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        answer = answers.pop(0)
        if isinstance(answer, int):
            return httpx.Response(answer, json={"error": "canned"})
        content = answer if isinstance(answer, str) else json.dumps(answer)
        return httpx.Response(200, json={"choices": [{"message": {"content": content}}]})

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def _summarize(answers: list[Any], request: PostcallRequest, seen: list[dict[str, Any]]) -> Any:
    async def main() -> Any:
        async with _client(answers, seen) as client:
            return await summarize_call(
                SETTINGS, request, client=client, attempts=3, backoff_s=(0.0,)
            )

    return asyncio.run(main())


def test_one_request_gives_all_three_after_retrying_a_5xx_and_a_bad_reply() -> None:
    seen: list[dict[str, Any]] = []
    request = PostcallRequest(
        "user: I want it", analysis_schema={"wants": "boolean"}, dispositions=("YES", "NO")
    )
    fields = {"summary": " Said yes. ", "analysis": {"wants": "true"}, "disposition_tag": "yes"}
    reply = f"```json\n{json.dumps(fields)}\n```"
    result = _summarize([503, "not json", reply], request, seen)
    assert (result.summary, result.analysis, result.disposition_tag) == (
        "Said yes.",
        {"wants": True},
        "YES",
    )
    assert len(seen) == 3
    body = seen[0]
    assert body["model"] == "m" and body["response_format"] == {"type": "json_object"}
    prompt = body["messages"][-1]["content"]
    assert DEFAULT_SUMMARY_PROMPT in prompt and "YES, NO" in prompt and '"wants"' in prompt


def test_no_analysis_is_asked_for_or_kept_without_a_schema_or_prompt() -> None:
    seen: list[dict[str, Any]] = []
    reply = {"summary": "s", "analysis": {"x": 1}, "disposition_tag": "OTHER"}
    result = _summarize([reply], PostcallRequest("user: hi"), seen)
    assert (result.analysis, result.disposition_tag) == (None, "OTHER")
    assert '"analysis"' not in seen[0]["messages"][-1]["content"]


def test_a_4xx_is_not_retried_and_retries_are_bounded() -> None:
    seen: list[dict[str, Any]] = []
    with pytest.raises(LlmError, match="answered 401"):
        _summarize([401, {}], PostcallRequest("user: hi"), seen)
    assert len(seen) == 1
    seen.clear()
    with pytest.raises(LlmError, match="answered 500"):
        _summarize([500, 500, 500, {}], PostcallRequest("user: hi"), seen)
    assert len(seen) == 3


def test_without_an_llm_the_error_names_the_setting() -> None:
    with pytest.raises(AnalysisUnavailable, match="CALLFLEET_LLM_BASE_URL"):
        asyncio.run(summarize_call(Settings(llm_base_url=None), PostcallRequest("user: hi")))


def test_the_lease_must_outlast_the_llm_requests() -> None:
    with pytest.raises(ValueError, match="lease_s"):
        PostcallOptions(lease_s=60, llm_timeout_s=30, llm_attempts=3)

"""Post-call analysis: an OpenAI-compatible LLM answers questions about a transcript.

`questions` are `[question, answer_type]` pairs as the hosted API takes them; the
model is asked for a JSON object `{"answers": [...]}` with one value per question,
null when the transcript does not say.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx

from callfleet.config import Settings

__all__ = ["AnalysisUnavailable", "LlmError", "analyze_transcript"]


class AnalysisUnavailable(RuntimeError):
    """No LLM is configured."""


class LlmError(RuntimeError):
    """The LLM endpoint failed or answered in a shape we cannot use."""


def _prompt(goal: str | None, questions: Sequence[Sequence[str]], transcript: str) -> str:
    lines = [
        f"{i + 1}. {q[0]} (answer type: {q[1] if len(q) > 1 else 'string'})"
        for i, q in enumerate(questions)
    ]
    return (
        f"Goal of the call: {goal or 'not stated'}\n\nTranscript:\n{transcript or '(empty)'}\n\n"
        "Answer each question from the transcript only. Reply with a JSON object "
        '{"answers": [...]} holding one answer per question in order; use null when the '
        "transcript does not answer it.\n\n" + "\n".join(lines)
    )


async def analyze_transcript(
    settings: Settings,
    goal: str | None,
    questions: Sequence[Sequence[str]],
    transcript: str,
    *,
    client: httpx.AsyncClient | None = None,
) -> list[Any]:
    if not settings.llm_base_url:
        raise AnalysisUnavailable(
            "Analysis needs an LLM: set CALLFLEET_LLM_BASE_URL (any OpenAI-compatible "
            "endpoint) and CALLFLEET_LLM_MODEL, then restart callfleet."
        )
    headers = {"authorization": f"Bearer {settings.llm_api_key}"} if settings.llm_api_key else {}
    body = {
        "model": settings.llm_model or "default",
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": "You extract facts from phone call transcripts."},
            {"role": "user", "content": _prompt(goal, questions, transcript)},
        ],
    }
    own = client is None
    http = client or httpx.AsyncClient(timeout=60)
    try:
        url = settings.llm_base_url.rstrip("/") + "/chat/completions"
        resp = await http.post(url, json=body, headers=headers)
        if resp.status_code >= 400:
            raise LlmError(f"the LLM endpoint answered {resp.status_code}: {resp.text[:200]}")
        content = resp.json()["choices"][0]["message"]["content"]
        answers = json.loads(content)["answers"]
    except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise LlmError(f"the LLM endpoint failed: {exc}") from exc
    finally:
        if own:
            await http.aclose()
    if not isinstance(answers, list):
        raise LlmError("the LLM did not return a list of answers")
    answers = (answers + [None] * len(questions))[: len(questions)]
    return answers

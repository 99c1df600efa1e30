"""Post-call work with an OpenAI-compatible LLM: a call's summary, analysis and disposition,
and the answers of the `/analyze` endpoints.

`summarize_call` asks for all three in one JSON object (one round trip per call):

- `summary`: follows the call's `summary_prompt`, or `DEFAULT_SUMMARY_PROMPT`;
- `analysis` (only when `analysis_schema` and/or `analysis_prompt` is given): an object
  with the schema's keys, each value coerced to the type the schema names (`string`,
  `number`, `integer`, `boolean`, `array`, `object`, a nested object or a one-item
  list of a type; a type name may be followed by a description). A key whose spec
  is only a description keeps the model's value. A value that cannot be coerced, or
  that the model left out, is null;
- `disposition_tag`: one of the call's `dispositions` (or `BUILTIN_DISPOSITIONS`),
  matched ignoring case, spaces and dashes; any other answer is null.

`analyze_transcript` answers `[question, answer_type]` pairs as the hosted API takes
them: `{"answers": [...]}` with one value per question, null when the transcript
does not say.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

from callfleet.config import Settings

__all__ = [
    "BUILTIN_DISPOSITIONS",
    "DEFAULT_SUMMARY_PROMPT",
    "AnalysisUnavailable",
    "LlmError",
    "PostcallRequest",
    "PostcallResult",
    "analyze_transcript",
    "choose_disposition",
    "coerce_value",
    "require_llm",
    "summarize_call",
]

DEFAULT_SUMMARY_PROMPT = (
    "Summarize the call in two to four sentences: who answered, what was discussed "
    "and agreed, and the next steps, if any."
)
BUILTIN_DISPOSITIONS: tuple[str, ...] = (
    "INTERESTED",
    "NOT_INTERESTED",
    "CALLBACK_REQUESTED",
    "APPOINTMENT_SCHEDULED",
    "DO_NOT_CONTACT",
    "WRONG_NUMBER",
    "VOICEMAIL",
    "NO_ANSWER",
    "BUSY",
    "FAILED",
    "OTHER",
)
log = structlog.get_logger(__name__)

# Enough for a 30-minute call; a longer transcript keeps its start and its end.
MAX_TRANSCRIPT_CHARS = 60_000


class AnalysisUnavailable(RuntimeError):
    """No LLM is configured."""


class LlmError(RuntimeError):
    """The LLM endpoint failed or answered in a shape we cannot use."""


def require_llm(settings: Settings) -> str:
    """The chat-completions URL; `AnalysisUnavailable` naming the setting without one."""
    if not settings.llm_base_url:
        raise AnalysisUnavailable(
            "Analysis needs an LLM: set CALLFLEET_LLM_BASE_URL (any OpenAI-compatible "
            "endpoint) and CALLFLEET_LLM_MODEL, then restart callfleet."
        )
    return settings.llm_base_url.rstrip("/") + "/chat/completions"


def _json_object(content: Any) -> dict[str, Any]:
    """The JSON object in a reply, tolerating code fences and text around it."""
    if not isinstance(content, str):
        raise ValueError("the reply has no text")
    start, end = content.find("{"), content.rfind("}")
    if start < 0 or end < start:
        raise ValueError(f"no JSON object in the reply {content[:120]!r}")
    value = json.loads(content[start : end + 1])
    if not isinstance(value, dict):
        raise ValueError("the reply is not a JSON object")
    return value


async def _chat_json(
    settings: Settings,
    system: str,
    prompt: str,
    *,
    client: httpx.AsyncClient | None,
    timeout_s: float,
    attempts: int = 1,
    backoff_s: Sequence[float] = (0.5, 2.0),
) -> dict[str, Any]:
    """One chat completion whose reply is a JSON object, retried `attempts` times on
    network errors, 429, 5xx and unreadable replies (other 4xx are not retried)."""
    url = require_llm(settings)
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else ""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {
        "model": settings.llm_model or "default",
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": prompt},
        ],
    }
    own = client is None
    http = client or httpx.AsyncClient()
    last = LlmError("no attempt was made")
    try:
        for attempt in range(max(1, attempts)):
            if attempt:
                await asyncio.sleep(backoff_s[min(attempt - 1, len(backoff_s) - 1)])
            try:
                resp = await http.post(url, json=body, headers=headers, timeout=timeout_s)
            except httpx.HTTPError as exc:
                # The URL (a tenant may see this message) and the exception's text
                # (which may hold it) go to the log only.
                log.warning("llm request failed", error=str(exc)[:300])
                last = LlmError(f"could not reach the LLM ({_error_kind(exc)})")
                continue
            if resp.status_code >= 400:
                log.warning("llm answered an error", status=resp.status_code, body=resp.text[:300])
                error = LlmError(f"the LLM endpoint answered {resp.status_code}")
                if resp.status_code == 429 or resp.status_code >= 500:
                    last = error
                    continue
                raise error
            try:
                return _json_object(resp.json()["choices"][0]["message"]["content"])
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                last = LlmError(f"the LLM's reply could not be used: {exc}")
        raise last
    finally:
        if own:
            await http.aclose()


def _error_kind(exc: httpx.HTTPError) -> str:
    """What went wrong, in words that carry no URL, host or key."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    return type(exc).__name__


# -- the /analyze endpoints ------------------------------------------------------------


def _questions_prompt(goal: str | None, questions: Sequence[Sequence[str]], transcript: str) -> str:
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
    timeout_s: float = 60.0,
) -> list[Any]:
    """One answer per question (null when the transcript does not say)."""
    reply = await _chat_json(
        settings,
        "You extract facts from phone call transcripts.",
        _questions_prompt(goal, questions, _clip(transcript)),
        client=client,
        timeout_s=timeout_s,
        attempts=2,
    )
    answers = reply.get("answers")
    if not isinstance(answers, list):
        raise LlmError("the LLM did not return a list of answers")
    return (answers + [None] * len(questions))[: len(questions)]


# -- post-call summary, analysis and disposition -----------------------------------------


@dataclass(frozen=True)
class PostcallRequest:
    """What the post-call step knows about one call."""

    transcript: str
    task: str = ""
    summary_prompt: str | None = None
    analysis_schema: Mapping[str, Any] | None = None
    analysis_prompt: str | None = None
    dispositions: Sequence[str] = field(default=BUILTIN_DISPOSITIONS)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], task: str, transcript: str) -> PostcallRequest:
        """From a call's stored Send Call fields (`available_tags` is the legacy name)."""
        tags = params.get("dispositions") or params.get("available_tags")
        schema = params.get("analysis_schema")
        return cls(
            transcript=transcript,
            task=task,
            summary_prompt=params.get("summary_prompt") or None,
            analysis_schema=schema if isinstance(schema, Mapping) and schema else None,
            analysis_prompt=params.get("analysis_prompt") or None,
            dispositions=tuple(str(t) for t in tags) if tags else BUILTIN_DISPOSITIONS,
        )

    @property
    def wants_analysis(self) -> bool:
        return self.analysis_schema is not None or self.analysis_prompt is not None


@dataclass(frozen=True)
class PostcallResult:
    summary: str | None
    analysis: dict[str, Any] | None
    disposition_tag: str | None


def _clip(transcript: str) -> str:
    if len(transcript) <= MAX_TRANSCRIPT_CHARS:
        return transcript
    half = MAX_TRANSCRIPT_CHARS // 2
    return transcript[:half] + "\n[... middle of the call left out ...]\n" + transcript[-half:]


def _postcall_prompt(request: PostcallRequest) -> str:
    parts = []
    if request.task:
        parts.append(f"The agent's task on this call:\n{request.task[:4000]}")
    parts.append(f"Transcript:\n{_clip(request.transcript) or '(empty)'}")
    keys = [
        '"summary": a string. ' + (request.summary_prompt or DEFAULT_SUMMARY_PROMPT),
    ]
    if request.wants_analysis:
        text = '"analysis": an object'
        if request.analysis_schema is not None:
            schema = json.dumps(dict(request.analysis_schema), ensure_ascii=False)
            text += f" with exactly these keys, each value of the type or meaning given: {schema}"
        text += ". Use null for anything the transcript does not say."
        if request.analysis_prompt:
            text += f" Instructions: {request.analysis_prompt}"
        keys.append(text)
    tags = ", ".join(request.dispositions)
    keys.append(
        f'"disposition_tag": exactly one of {tags}: the one that best describes how the call ended.'
    )
    parts.append("Reply with one JSON object with these keys:\n" + "\n".join(keys))
    return "\n\n".join(parts)


async def summarize_call(
    settings: Settings,
    request: PostcallRequest,
    *,
    client: httpx.AsyncClient | None = None,
    timeout_s: float = 30.0,
    attempts: int = 3,
    backoff_s: Sequence[float] = (0.5, 2.0),
) -> PostcallResult:
    """Summary, analysis and disposition of one call in one LLM request (retried)."""
    reply = await _chat_json(
        settings,
        "You review phone calls made by an AI agent and report on them as JSON. Use only "
        "what the transcript says.",
        _postcall_prompt(request),
        client=client,
        timeout_s=timeout_s,
        attempts=attempts,
        backoff_s=backoff_s,
    )
    summary = reply.get("summary")
    analysis: dict[str, Any] | None = None
    raw = reply.get("analysis")
    if request.analysis_schema is not None:
        analysis = coerce_value(raw if isinstance(raw, dict) else {}, dict(request.analysis_schema))
    elif request.analysis_prompt is not None and isinstance(raw, dict):
        analysis = raw
    return PostcallResult(
        summary=(summary.strip() or None) if isinstance(summary, str) else None,
        analysis=analysis,
        disposition_tag=choose_disposition(reply.get("disposition_tag"), request.dispositions),
    )


def _tag_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")


def choose_disposition(answer: Any, allowed: Sequence[str]) -> str | None:
    """The allowed tag the answer names (ignoring case, spaces, dashes), else None."""
    if not isinstance(answer, str):
        return None
    return {_tag_key(t): t for t in allowed}.get(_tag_key(answer))


_KINDS = {
    "string": "string",
    "str": "string",
    "text": "string",
    "number": "number",
    "float": "number",
    "decimal": "number",
    "integer": "integer",
    "int": "integer",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "object": "object",
    "dict": "object",
}
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def _kind(spec: str) -> str | None:
    """The type a spec names: "boolean", or "boolean: did they agree?"; None: a description."""
    match = re.match(r"\s*([A-Za-z]+)\s*(?:$|[:(\-,;])", spec)
    return _KINDS.get(match.group(1).lower()) if match else None


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            parsed = float(value.strip().replace(",", "").lstrip("$€£").rstrip("%"))
        except ValueError:
            return None
        if not math.isfinite(parsed):
            return None
        return int(parsed) if parsed.is_integer() and "." not in value else parsed
    return None


def coerce_value(value: Any, spec: Any) -> Any:
    """`value` as the type `spec` names, or None when it cannot be (see the module doc)."""
    if value is None:
        return None
    if isinstance(spec, Mapping):
        if not isinstance(value, Mapping):
            return None
        return {str(k): coerce_value(value.get(k), s) for k, s in spec.items()}
    if isinstance(spec, list):
        items = value if isinstance(value, list) else [value]
        item_spec = spec[0] if spec else "any"
        return [coerce_value(v, item_spec) for v in items]
    kind = _kind(spec) if isinstance(spec, str) else None
    if kind is None:
        return value
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        return json.dumps(value, ensure_ascii=False)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            word = value.strip().lower()
            return True if word in _TRUE else False if word in _FALSE else None
        return None
    if kind == "number":
        return _number(value)
    if kind == "integer":
        number = _number(value)
        if number is None or (isinstance(number, float) and not number.is_integer()):
            return None
        return int(number)
    if kind == "array":
        return value if isinstance(value, list) else [value]
    return value if isinstance(value, dict) else None

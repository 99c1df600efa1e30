"""What shapes one conversation (`AgentOptions`) and which engines run it (`ProviderSettings`).

`AgentOptions.from_params` reads the call's Send Call fields (the dict the
dispatcher puts in `DialRequest.params`); unknown keys are ignored so the API can
grow without breaking the agent, and malformed entries of `tools`, `dynamic_data`
and `transfer_list` are left out (the API rejects them before a call is queued,
with `parse_tools` and `parse_dynamic_data`). `HttpTool` is the shape of a
custom tool (the API contract documents it under Send Call `tools`).
`ProviderSettings` is the process-wide choice of STT, TTS and LLM, filled from
`callfleet.config.Settings` by the runner.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from callfleet.agent.dynamic_data import (
    DynamicDataSource,
    HttpRequestSpec,
    parse_dynamic_data,
    parse_request,
    variable_names,
)

__all__ = [
    "BUILT_IN_TOOLS",
    "DEFAULT_CLOSING_LINE",
    "DEFAULT_SPEECH_TIMEOUT_S",
    "AgentOptions",
    "HttpTool",
    "ProviderSettings",
    "late_bound_names",
    "parse_tools",
    "transfer_numbers",
]

DEFAULT_SPEECH_TIMEOUT_S = 0.7
DEFAULT_CLOSING_LINE = "Thank you for your time. Goodbye."
VOICEMAIL_ACTIONS = ("hangup", "leave_message", "ignore")
BUILT_IN_TOOLS = ("end_call", "transfer_call")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CALL_VARIABLES = ("call_id", "to", "from", "phone_number", "short_to", "short_from", "timezone")
"""Keys of the call's fields that are also template variables (besides `request_data`)."""


@dataclass(frozen=True)
class HttpTool:
    """A custom tool from the call's `tools`: the LLM calls it, callfleet makes the request."""

    name: str
    description: str
    request: HttpRequestSpec
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    """JSON schema of the arguments (an object schema); `{}` takes none."""
    speech: str | None = None
    """Said while the request runs ("Let me check that.")."""


def parse_tools(value: object, where: str = "tools", *, url_required: bool = True) -> tuple[
    tuple[HttpTool, ...], list[tuple[str, str]]
]:  # fmt: skip
    """The custom tools of a call's `tools`, and (path, problem) for those left out.

    With `url_required=False` (the API's check) a tool without a `url` is no problem,
    though the agent cannot use it: the official SDK's `CustomTool` type has no `url`
    field, so its users send one only as an extra field.
    """
    problems: list[tuple[str, str]] = []
    if value is None:
        return (), problems
    if not isinstance(value, list):
        return (), [(where, "must be an array of tool objects")]
    tools: list[HttpTool] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(item, str):
            problems.append(
                (
                    at,
                    f"{item!r} is a stored tool id; callfleet takes tools inline, "
                    "as objects {name, description, url, method, input_schema, ...}",
                )
            )
            continue
        if not isinstance(item, Mapping):
            problems.append((at, "must be an object {name, description, url, ...}"))
            continue
        before = len(problems)
        name = str(item.get("name") or "")
        if not _TOOL_NAME.match(name):
            problems.append((f"{at}.name", "is required: 1-64 letters, digits, '_' or '-'"))
        elif name in BUILT_IN_TOOLS or name in seen:
            problems.append((f"{at}.name", f"{name!r} is taken (built in, or used twice)"))
        description = item.get("description")
        if not isinstance(description, str) or not description.strip():
            problems.append((f"{at}.description", "is required: when the agent should use it"))
        schema = item.get("input_schema", item.get("parameters")) or {}
        if not isinstance(schema, Mapping) or (
            schema and (schema.get("type", "object") != "object"
                        or not isinstance(schema.get("properties", {}), Mapping))
        ):  # fmt: skip
            problems.append((f"{at}.input_schema", "must be a JSON schema of type 'object'"))
        speech = item.get("speech")
        if speech is not None and not isinstance(speech, str):
            problems.append((f"{at}.speech", "must be a string"))
        if not item.get("url") and not url_required:
            continue
        request = parse_request(item, at, problems)
        if len(problems) > before or request is None:
            continue
        seen.add(name)
        tools.append(HttpTool(name, str(description), request, dict(schema), speech or None))
    return tuple(tools), problems


HOSTED_MODEL_TIERS = ("base", "turbo", "enhanced")


def _llm_model(value: str | None) -> str | None:
    if value is None or value.lower() in HOSTED_MODEL_TIERS:
        return None
    return value


def late_bound_names(params: Mapping[str, Any]) -> list[str]:
    """Placeholders the agent fills during the call, not when the call is queued: the
    `response_data` names of its `dynamic_data` and of its tools. Submission should
    leave `{{name}}` as written for these instead of calling them missing."""
    names = variable_names(params.get("dynamic_data"))
    for tool in parse_tools(params.get("tools"))[0]:
        names.extend(f.name for f in tool.request.response_data)
    return list(dict.fromkeys(names))


def transfer_numbers(params: Mapping[str, Any]) -> dict[str, str]:
    """Where a transfer may go: `{"default": number, department: number, ...}`.

    `transfer_list.default` overrides `transfer_phone_number`; empty values are dropped.
    """
    numbers: dict[str, str] = {}
    single = params.get("transfer_phone_number")
    if isinstance(single, str | int) and not isinstance(single, bool) and str(single).strip():
        numbers["default"] = str(single).strip()
    listed = params.get("transfer_list")
    if isinstance(listed, Mapping):
        for key, number in listed.items():
            if isinstance(number, str | int) and not isinstance(number, bool) and str(number):
                numbers[str(key)] = str(number).strip()
    return numbers


@dataclass(frozen=True)
class AgentOptions:
    """The conversation as the call's fields describe it."""

    prompt: str = ""
    """The rendered task: the agent's instructions (and facts from `request_data`)."""
    first_sentence: str | None = None
    wait_for_greeting: bool = False
    greeting_timeout_s: float = 4.0
    """With `wait_for_greeting`, speak anyway if the callee said nothing by then."""
    block_interruptions: bool = False
    speech_timeout_s: float = DEFAULT_SPEECH_TIMEOUT_S
    """Quiet after the callee's speech that ends their turn: 0.2 s plus the call's
    `interruption_threshold` in milliseconds (500 by default, so 0.7 s), at least 0.5 s."""
    temperature: float | None = None
    max_tokens: int = 150
    script: tuple[str, ...] = ()
    """The scripted policy's lines, one per turn, after `first_sentence`."""
    closing_line: str = DEFAULT_CLOSING_LINE
    record: bool = False
    answered_by_enabled: bool = False
    voicemail_action: str = "hangup"
    voicemail_message: str | None = None
    model: str | None = None
    """The call's `model`, when it names an LLM model rather than one of the hosted
    product's tiers (`base`, `turbo`, `enhanced`): the LLM endpoint is asked for it."""
    voice: str | None = None
    """The call's `voice`: a hosted TTS provider's voice id or name (local voices ignore it)."""
    language: str = "en"
    keywords: tuple[str, ...] = ()
    pronunciation: tuple[tuple[str, str], ...] = ()
    """(word, how to say it) pairs applied to the text before synthesis."""
    tools: tuple[HttpTool, ...] = ()
    dynamic_data: tuple[DynamicDataSource, ...] = ()
    transfer_numbers: Mapping[str, str] = field(default_factory=dict)
    """`default` and departments (from `transfer_list`) to phone numbers."""
    variables: Mapping[str, object] = field(default_factory=dict)
    """`request_data` and the call's own variables (`CALL_VARIABLES`): what `{{name}}`
    in tools and `dynamic_data` requests is filled from."""

    def __post_init__(self) -> None:
        if self.voicemail_action not in VOICEMAIL_ACTIONS:
            raise ValueError(f"voicemail_action must be one of {VOICEMAIL_ACTIONS}")
        if not 0.5 <= self.speech_timeout_s <= 5.0:
            # 0.4 s of it is the VAD's own stop delay (callfleet.agent.session)
            raise ValueError("the speech timeout must be between 0.5 and 5 seconds")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AgentOptions:
        """Build the options from a call's Send Call fields."""

        def text(key: str) -> str | None:
            value = params.get(key)
            return str(value) if value not in (None, "") else None

        prompt = text("task") or text("prompt") or ""
        facts = params.get("request_data")
        if isinstance(facts, Mapping) and facts:
            listed = "\n".join(f"- {k}: {v}" for k, v in facts.items())
            prompt = f"{prompt}\n\nFacts about this call:\n{listed}".strip()
        threshold = params.get("interruption_threshold")
        timeout = DEFAULT_SPEECH_TIMEOUT_S
        if isinstance(threshold, int | float) and not isinstance(threshold, bool):
            # Milliseconds of patience on top of the VAD's own 0.2 s stop delay, so
            # the API's default of 500 gives the 0.7 s default speech timeout.
            timeout = min(5.0, max(0.5, 0.2 + float(threshold) / 1000.0))
        script = params.get("script")
        guide = params.get("pronunciation_guide")
        pairs: list[tuple[str, str]] = []
        if isinstance(guide, list):
            for item in guide:
                if isinstance(item, Mapping) and item.get("word") and item.get("pronunciation"):
                    pairs.append((str(item["word"]), str(item["pronunciation"])))
        keywords = params.get("keywords")
        temperature = params.get("temperature")
        action = text("voicemail_action") or "hangup"
        variables: dict[str, object] = dict(facts) if isinstance(facts, Mapping) else {}
        variables.update({k: params[k] for k in CALL_VARIABLES if params.get(k) is not None})
        for side in ("to", "from"):  # the hosted product's {{short_to}}: without the +1
            number = variables.get(side)
            if isinstance(number, str) and f"short_{side}" not in variables:
                variables[f"short_{side}"] = number[2:] if number.startswith("+1") else number
        return cls(
            prompt=prompt,
            first_sentence=text("first_sentence"),
            wait_for_greeting=bool(params.get("wait_for_greeting", False)),
            block_interruptions=bool(params.get("block_interruptions", False)),
            speech_timeout_s=timeout,
            temperature=float(temperature) if isinstance(temperature, int | float) else None,
            script=tuple(str(line) for line in script) if isinstance(script, list) else (),
            record=bool(params.get("record", False)),
            answered_by_enabled=bool(params.get("answered_by_enabled", False)),
            voicemail_action=action if action in VOICEMAIL_ACTIONS else "hangup",
            voicemail_message=text("voicemail_message"),
            voice=text("voice"),
            model=_llm_model(text("model")),
            language=(text("language") or "en").split("-")[0].lower(),
            keywords=tuple(str(k) for k in keywords) if isinstance(keywords, list) else (),
            pronunciation=tuple(pairs),
            tools=parse_tools(params.get("tools"))[0],
            dynamic_data=parse_dynamic_data(params.get("dynamic_data"))[0],
            transfer_numbers=transfer_numbers(params),
            variables=variables,
        )


@dataclass(frozen=True)
class ProviderSettings:
    """Which STT, TTS and LLM run the agents of this process."""

    stt: str = "whisper-local"
    tts: str = "piper-local"
    """`piper-local` falls back to `espeak` when Piper cannot start."""
    llm_base_url: str | None = None
    """Any OpenAI-compatible endpoint; None runs the scripted policy."""
    llm_api_key: str | None = None
    llm_model: str | None = None
    whisper_threads: int = 2
    espeak_voice: str = "en-us"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Any) -> ProviderSettings:
        """From `callfleet.config.Settings`: `llm_base_url`, `llm_api_key`, `llm_model`,
        and (once config has them) `stt_provider`, `tts_provider`, `whisper_threads`."""
        return cls(
            stt=getattr(settings, "stt_provider", None) or "whisper-local",
            tts=getattr(settings, "tts_provider", None) or "piper-local",
            llm_base_url=getattr(settings, "llm_base_url", None) or None,
            llm_api_key=getattr(settings, "llm_api_key", None) or None,
            llm_model=getattr(settings, "llm_model", None) or None,
            whisper_threads=int(getattr(settings, "whisper_threads", None) or 2),
        )

    @property
    def model_label(self) -> str:
        """What the call records as its `model`: "scripted" when no LLM is configured."""
        if not self.llm_base_url:
            return "scripted"
        return self.llm_model or "default"

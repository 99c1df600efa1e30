"""What a call's stored fields ask of its conversation, parsed once for the agent to act on.

The dispatcher hands the agent the call's parameters as stored (`resolve_fields`
plus the call's own variables: `call_id`, `to`, `from`, `request_data`, ...).
`Conversation.from_params` reads them into typed values: the prompt with the
call's facts, the speech timeout from `interruption_threshold`, the voicemail
choice, the LLM model (unless it is one of the hosted product's tiers), the
language, keywords, pronunciations, tools, `dynamic_data` sources, transfer
numbers and the variables their `{{placeholders}}` are filled from. Unknown keys
are ignored so the API can grow without breaking the agent, and malformed entries
are left out: the API rejects them before a call is queued, with the same parsers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .disclosures import DISCLOSURES_PARAM
from .opt_out import OPT_OUT_DIGITS
from .tools import DynamicDataSource, HttpTool, parse_dynamic_data, parse_tools

__all__ = [
    "CALL_VARIABLES",
    "DEFAULT_SPEECH_TIMEOUT_S",
    "HOSTED_MODEL_TIERS",
    "VOICEMAIL_ACTIONS",
    "Conversation",
    "llm_model",
    "speech_timeout",
    "transfer_numbers",
]

DEFAULT_SPEECH_TIMEOUT_S = 0.7
VOICEMAIL_ACTIONS = ("hangup", "leave_message", "ignore")
HOSTED_MODEL_TIERS = ("base", "turbo", "enhanced")
CALL_VARIABLES = ("call_id", "to", "from", "phone_number", "short_to", "short_from", "timezone")
"""Keys of the call's fields that are also template variables (besides `request_data`)."""


def llm_model(value: str | None) -> str | None:
    """The call's `model` as an LLM model name; None for the hosted tiers (the configured one)."""
    if value is None or value.lower() in HOSTED_MODEL_TIERS:
        return None
    return value


def speech_timeout(threshold: object) -> float:
    """Quiet that ends the callee's turn, from `interruption_threshold` (milliseconds).

    The milliseconds come on top of the VAD's own 0.2 s stop delay, so the API's
    default of 500 gives the 0.7 s default; kept between 0.5 and 5 seconds.
    """
    if isinstance(threshold, int | float) and not isinstance(threshold, bool):
        return min(5.0, max(0.5, 0.2 + float(threshold) / 1000.0))
    return DEFAULT_SPEECH_TIMEOUT_S


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


def _text(params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    return str(value) if value not in (None, "") else None


def _prompt(params: Mapping[str, Any]) -> str:
    """The rendered task, with `request_data` listed as the call's facts."""
    prompt = _text(params, "task") or _text(params, "prompt") or ""
    facts = params.get("request_data")
    if isinstance(facts, Mapping) and facts:
        listed = "\n".join(f"- {k}: {v}" for k, v in facts.items())
        prompt = f"{prompt}\n\nFacts about this call:\n{listed}".strip()
    return prompt


def _pronunciation(guide: object) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    if isinstance(guide, list):
        for item in guide:
            if isinstance(item, Mapping) and item.get("word") and item.get("pronunciation"):
                pairs.append((str(item["word"]), str(item["pronunciation"])))
    return tuple(pairs)


def _variables(params: Mapping[str, Any]) -> dict[str, object]:
    """`request_data` and the call's own variables, with the hosted product's `short_to`."""
    facts = params.get("request_data")
    variables: dict[str, object] = dict(facts) if isinstance(facts, Mapping) else {}
    variables.update({k: params[k] for k in CALL_VARIABLES if params.get(k) is not None})
    for side in ("to", "from"):  # the hosted product's {{short_to}}: without the +1
        number = variables.get(side)
        if isinstance(number, str) and f"short_{side}" not in variables:
            variables[f"short_{side}"] = number[2:] if number.startswith("+1") else number
    return variables


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


@dataclass(frozen=True)
class Conversation:
    """The conversation as the call's fields describe it."""

    prompt: str = ""
    """The rendered task: the agent's instructions (and facts from `request_data`)."""
    first_sentence: str | None = None
    wait_for_greeting: bool = False
    block_interruptions: bool = False
    speech_timeout_s: float = DEFAULT_SPEECH_TIMEOUT_S
    temperature: float | None = None
    script: tuple[str, ...] = ()
    record: bool = False
    answered_by_enabled: bool = False
    voicemail_action: str = "hangup"
    voicemail_message: str | None = None
    model: str | None = None
    voice: str | None = None
    language: str = "en"
    keywords: tuple[str, ...] = ()
    pronunciation: tuple[tuple[str, str], ...] = ()
    tools: tuple[HttpTool, ...] = ()
    dynamic_data: tuple[DynamicDataSource, ...] = ()
    transfer_numbers: Mapping[str, str] = field(default_factory=dict)
    variables: Mapping[str, object] = field(default_factory=dict)
    opt_out_digit: str | None = None
    disclosures: tuple[str, ...] = ()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Conversation:
        """Read a call's stored parameters; what is malformed is left out."""
        temperature = params.get("temperature")
        action = _text(params, "voicemail_action") or "hangup"
        digit = _text(params, "opt_out_digit")
        return cls(
            prompt=_prompt(params),
            first_sentence=_text(params, "first_sentence"),
            wait_for_greeting=bool(params.get("wait_for_greeting", False)),
            block_interruptions=bool(params.get("block_interruptions", False)),
            speech_timeout_s=speech_timeout(params.get("interruption_threshold")),
            temperature=float(temperature) if isinstance(temperature, int | float) else None,
            script=_strings(params.get("script")),
            record=bool(params.get("record", False)),
            answered_by_enabled=bool(params.get("answered_by_enabled", False)),
            voicemail_action=action if action in VOICEMAIL_ACTIONS else "hangup",
            voicemail_message=_text(params, "voicemail_message"),
            voice=_text(params, "voice"),
            model=llm_model(_text(params, "model")),
            language=(_text(params, "language") or "en").split("-")[0].lower(),
            keywords=_strings(params.get("keywords")),
            pronunciation=_pronunciation(params.get("pronunciation_guide")),
            tools=parse_tools(params.get("tools"))[0],
            dynamic_data=parse_dynamic_data(params.get("dynamic_data"))[0],
            transfer_numbers=transfer_numbers(params),
            variables=_variables(params),
            opt_out_digit=digit if digit in OPT_OUT_DIGITS else None,
            disclosures=_strings(list(params.get(DISCLOSURES_PARAM) or ())),
        )

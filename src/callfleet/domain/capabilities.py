"""Which accepted Send Call fields have no effect in this deployment, and what to do about it.

callfleet accepts every field the hosted product's clients send, so that they keep
working; some of those fields do nothing here, because the deployment's engines
cannot honour them (a call's `voice` with the local TTS, a non-English `language`
with the English-only local speech recognizer, tools and post-call analysis
without an LLM) or because callfleet has no such feature (`amd`,
`reduce_latency`). A request that sends one is accepted, and the response's
`warnings` name the field, say why it has no effect here and what to do; nothing
is dropped silently. A `call_data` row key that is a Send Call field name callfleet
does not take (`pathway_id`, `webhook_events`, ...) stays a template property, as
any other row key, and is warned about too.

`Deployment` is what the running configuration can do, built by the API from its
settings; everything here is pure. A deployment without the AI agent (the
dispatcher's rehearsal carrier `simulator-nomedia`, or the agent switched off)
gets no warnings about the conversation's fields: no call there has a
conversation, which the operator chose, so every such field would be flagged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .disclosures import KNOWN_GUARD_RAILS, guard_rail_names
from .errors import InvalidInput
from .retry import parse_retry
from .tools import parse_tools

__all__ = [
    "LOCAL_STT",
    "LOCAL_TTS",
    "SEND_CALL_FIELDS_NOT_AT_ROW_LEVEL",
    "Deployment",
    "ineffective_fields",
    "unsupported_row_keys",
]

LOCAL_TTS: Final = ("piper-local", "espeak")
"""Text-to-speech engines with one English voice: a call's `voice` cannot choose."""
LOCAL_STT: Final = ("whisper-local",)
"""Speech recognizers that hear English only (Whisper `tiny.en`)."""
HOSTED_TTS_CHOICES: Final = "openai, elevenlabs or cartesia"
HOSTED_STT_CHOICES: Final = "deepgram or openai"

SEND_CALL_FIELDS_NOT_AT_ROW_LEVEL: Final = frozenset(
    {
        "pathway_id",
        "start_node_id",
        "pathway_version",
        "persona_id",
        "interruptibility",
        "language_detection_period",
        "language_detection_options",
        "calendly",
        "voicemail",
        "voicemail_sms",
        "sensitive_voicemail_detection",
        "local_dialing",
        "geospatial_dialing",
        "dialing_strategy",
        "dispatch_hours",
        "webhook_events",
        "analysis_preset",
        "citation_schema_ids",
        "post_call_evals",
        "background_track",
        "noise_cancellation",
        "ignore_button_press",
        "precall_dtmf_sequence",
        "stream_post_transfer_transcript",
    }
)
"""The hosted product's Send Call fields (research/mission-anchors.md §1.5) that
callfleet does not take: in a `call_data` row they are only template properties."""


@dataclass(frozen=True)
class Deployment:
    """What the running configuration does with a call's fields."""

    agent: bool = True
    """Answered calls get the AI agent (False: nobody speaks, as in `simulator-nomedia`)."""
    tts: str = "piper-local"
    stt: str = "whisper-local"
    llm: bool = False
    """An LLM is configured: without one the agent follows the scripted policy and
    there is no post-call summary or analysis."""


Note = tuple[str, str]
"""(field, why it has no effect and what to do)."""


def _voice_notes(fields: Mapping[str, Any], deployment: Deployment) -> list[Note]:
    if deployment.tts not in LOCAL_TTS:
        return []
    return [
        (
            name,
            f"{fields[name]!r} has no effect here: this deployment speaks with the local "
            f"TTS ({deployment.tts}), which has a single voice. Set CALLFLEET_TTS_PROVIDER "
            f"to {HOSTED_TTS_CHOICES} to choose voices, or leave `{name}` out.",
        )
        for name in ("voice", "voice_id", "voice_preset_id")
        if fields.get(name) not in (None, "", 0)  # the official SDK sends voice_id 0 unasked
    ]


def _language_notes(fields: Mapping[str, Any], deployment: Deployment) -> list[Note]:
    language = fields.get("language")
    if not isinstance(language, str) or deployment.stt not in LOCAL_STT:
        return []
    if language.lower().split("-")[0] in ("en", "") or language.lower() == "babel-en":
        return []
    return [
        (
            "language",
            f"{language!r} has no effect here: the local speech recognizer "
            f"({deployment.stt}) hears English only and the agent speaks English. Set "
            f"CALLFLEET_STT_PROVIDER to {HOSTED_STT_CHOICES} for other languages, or "
            "leave `language` out.",
        )
    ]


_NO_SUCH_FEATURE: Final = {
    "amd": "No effect: callfleet has no phone-tree (IVR) navigation mode. To tell "
    "people from answering machines use `answered_by_enabled: true`; otherwise leave "
    "`amd` out.",
    "reduce_latency": "No effect: callfleet has one speech pipeline for every call, "
    "with no faster, lower-quality variant; leave `reduce_latency` out.",
    "voice_settings": "No effect: callfleet passes no voice settings to the TTS; "
    "leave `voice_settings` out.",
}


def _feature_notes(fields: Mapping[str, Any]) -> list[Note]:
    # False is how the official SDK says "not set" for the booleans: only a value asks.
    return [(name, why) for name, why in _NO_SUCH_FEATURE.items() if fields.get(name)]


def _retry_notes(fields: Mapping[str, Any]) -> list[Note]:
    if "retry" not in fields or fields.get("answered_by_enabled"):
        return []
    try:
        policy = parse_retry(fields["retry"], "retry")
    except InvalidInput:
        return []  # refused elsewhere, with the reason
    if "voicemail" not in policy.on:
        return []
    return [
        (
            "retry",
            "Retrying on voicemail has no effect without answered-by detection: a call "
            "that reaches voicemail ends `completed`. Add `answered_by_enabled: true`, or "
            "drop `voicemail` from the retry.",
        )
    ]


def _tool_notes(fields: Mapping[str, Any]) -> list[Note]:
    tools = fields.get("tools")
    if not isinstance(tools, list) or parse_tools(tools, url_required=False)[1]:
        return []  # malformed tools are refused elsewhere, with the reason
    return [
        (
            f"tools[{i}]",
            f"{tool.get('name')!r} has no `url`, so the agent cannot call it and it is "
            "not offered. Add `url` (and `method`) to the tool: callfleet makes the "
            "request itself.",
        )
        for i, tool in enumerate(tools)
        if isinstance(tool, Mapping) and not tool.get("url")
    ]


_NEEDS_LLM: Final = {
    "tools": "the scripted policy calls no tools",
    "transfer_phone_number": "the scripted policy transfers no calls",
    "transfer_list": "the scripted policy transfers no calls",
    "temperature": "the scripted policy says its lines as written",
    "summary_prompt": "post-call summaries need an LLM",
    "analysis_schema": "post-call analysis needs an LLM",
    "analysis_prompt": "post-call analysis needs an LLM",
    "dispositions": "choosing a disposition tag needs an LLM",
    "available_tags": "choosing a disposition tag needs an LLM",
}


def _llm_notes(fields: Mapping[str, Any], deployment: Deployment) -> list[Note]:
    if deployment.llm:
        if not fields.get("script"):
            return []
        return [
            (
                "script",
                "No effect: an LLM is configured, so the agent answers for itself; "
                "`script` only drives the scripted policy used without one. Put the lines "
                "in the prompt, or leave `script` out.",
            )
        ]
    return [
        (
            name,
            f"No effect: no LLM is configured, and {why}. Set CALLFLEET_LLM_BASE_URL "
            f"(any OpenAI-compatible endpoint) to use `{name}`, or leave it out.",
        )
        for name, why in _NEEDS_LLM.items()
        if fields.get(name) not in (None, "", [], {})
    ]


def _guard_rail_notes(fields: Mapping[str, Any]) -> list[Note]:
    known = ", ".join(f"`{name}`" for name in sorted(KNOWN_GUARD_RAILS))
    return [
        (
            f"guard_rails[{i}]",
            f"{fields['guard_rails'][i]!r} has no effect: callfleet keeps the guard rails "
            f"{known} (the disclosures are said first; an opt-out is always honoured). "
            "Leave the others out.",
        )
        for i, name in enumerate(guard_rail_names(fields.get("guard_rails")))
        if name not in KNOWN_GUARD_RAILS
    ]


def ineffective_fields(fields: Mapping[str, Any], deployment: Deployment) -> list[Note]:
    """The accepted fields in `fields` (as validated, legacy names kept) that do nothing here."""
    if not deployment.agent:
        return []
    return [
        *_voice_notes(fields, deployment),
        *_language_notes(fields, deployment),
        *_feature_notes(fields),
        *_retry_notes(fields),
        *_tool_notes(fields),
        *_llm_notes(fields, deployment),
        *_guard_rail_notes(fields),
    ]


def unsupported_row_keys(row: Mapping[str, Any]) -> list[Note]:
    """Keys of a `call_data` row that name a Send Call field callfleet does not take."""
    return [
        (
            key,
            f"`{key}` is a Send Call field callfleet does not support, so it has no effect "
            "on the call; it was kept as a template property and in request_data, where the "
            "agent sees it as a fact. Rename the key if it is meant as data, or leave it out.",
        )
        for key in row
        if key in SEND_CALL_FIELDS_NOT_AT_ROW_LEVEL
    ]

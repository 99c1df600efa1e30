"""What shapes one conversation (`AgentOptions`) and which engines run it (`ProviderSettings`).

`AgentOptions` is the conversation the call's fields describe, parsed once by
`callfleet.domain.conversation.Conversation` (from the dict the dispatcher puts in
`DialRequest.params`), plus the agent's own settings (greeting timeout, token
limit, closing line). The agent never reads raw parameters itself; the parsers of
tools and `dynamic_data` (`callfleet.domain.tools`) are re-exported here.
`ProviderSettings` is the process-wide choice of STT, TTS and LLM, filled from
`callfleet.config.Settings` by the runner.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from callfleet.domain.conversation import (
    DEFAULT_SPEECH_TIMEOUT_S,
    VOICEMAIL_ACTIONS,
    Conversation,
    transfer_numbers,
)
from callfleet.domain.tools import (
    BUILT_IN_TOOLS,
    DynamicDataSource,
    HttpTool,
    late_bound_names,
    parse_tools,
)

__all__ = [
    "BUILT_IN_TOOLS",
    "DEFAULT_CLOSING_LINE",
    "DEFAULT_FALLBACK_LINE",
    "DEFAULT_SPEECH_TIMEOUT_S",
    "AgentOptions",
    "HttpTool",
    "ProviderSettings",
    "late_bound_names",
    "parse_tools",
    "transfer_numbers",
]

DEFAULT_CLOSING_LINE = "Thank you for your time. Goodbye."
# The same words as `Settings.llm_fallback_line`'s default.
DEFAULT_FALLBACK_LINE = "Sorry, I'm having trouble right now. Let me call you back later. Goodbye."


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
    opt_out_digit: str | None = None
    """The keypad key that opts the callee out (`opt_out_digit`), if any."""
    disclosures: tuple[str, ...] = ()
    """What the agent says before anything else (the call's `guard_rails`)."""

    def __post_init__(self) -> None:
        if self.voicemail_action not in VOICEMAIL_ACTIONS:
            raise ValueError(f"voicemail_action must be one of {VOICEMAIL_ACTIONS}")
        if not 0.5 <= self.speech_timeout_s <= 5.0:
            # 0.4 s of it is the VAD's own stop delay (callfleet.agent.session)
            raise ValueError("the speech timeout must be between 0.5 and 5 seconds")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AgentOptions:
        """Build the options from a call's Send Call fields (parsed by `Conversation`)."""
        return cls.from_conversation(Conversation.from_params(params))

    @classmethod
    def from_conversation(cls, conversation: Conversation) -> AgentOptions:
        """The options of an already-parsed conversation, with the agent's own defaults."""
        return cls(**{f.name: getattr(conversation, f.name) for f in fields(Conversation)})


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
    llm_timeout_s: float = 10.0
    """One in-call LLM request's limit; it is retried once, then the fallback line."""
    llm_fallback_line: str = DEFAULT_FALLBACK_LINE
    """Said before the agent hangs up when the LLM cannot answer."""
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
            llm_api_key=_reveal(getattr(settings, "llm_api_key", None)),
            llm_model=getattr(settings, "llm_model", None) or None,
            llm_timeout_s=float(getattr(settings, "llm_timeout_s", None) or 10.0),
            llm_fallback_line=getattr(settings, "llm_fallback_line", None) or DEFAULT_FALLBACK_LINE,
            whisper_threads=int(getattr(settings, "whisper_threads", None) or 2),
        )

    @property
    def model_label(self) -> str:
        """What the call records as its `model`: "scripted" when no LLM is configured."""
        if not self.llm_base_url:
            return "scripted"
        return self.llm_model or "default"


def _reveal(secret: Any) -> str | None:
    """A `SecretStr` (or plain string) setting's text; None when unset or empty."""
    if secret is None:
        return None
    text = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
    return text or None

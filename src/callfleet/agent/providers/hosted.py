"""Hosted speech providers: pipecat's own services, configured from callfleet's settings.

The offline engines are the default; these are for deployments that would rather
pay per minute for lower latency or other voices. Each needs an API key in the
environment (see `HOSTED_KEYS`); a missing key fails at start-up with a message
naming the variable, never on a live call.

| provider     | kind | pipecat service        | key (`CALLFLEET_...`)  | `voice` is    |
| ------------ | ---- | ---------------------- | ---------------------- | ------------- |
| `deepgram`   | STT  | `DeepgramSTTService`   | `DEEPGRAM_API_KEY`     | -             |
| `openai`     | STT  | `OpenAISTTService`     | `OPENAI_API_KEY`       | -             |
| `openai`     | TTS  | `OpenAITTSService`     | `OPENAI_API_KEY`       | a voice name  |
| `elevenlabs` | TTS  | `ElevenLabsTTSService` | `ELEVENLABS_API_KEY`   | a voice id    |
| `cartesia`   | TTS  | `CartesiaTTSService`   | `CARTESIA_API_KEY`     | a voice id    |

`CALLFLEET_OPENAI_BASE_URL` points the OpenAI speech services at any compatible
server (it defaults to the LLM's base URL when that is set, else OpenAI's).
A call's `voice` field picks the TTS voice when it is not one of the hosted
product's preset names; `CALLFLEET_TTS_VOICE` is the default voice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transcriptions.language import Language

__all__ = [
    "HOSTED_KEYS",
    "HOSTED_STT",
    "HOSTED_TTS",
    "check_hosted",
    "hosted_stt",
    "hosted_tts",
]

HOSTED_STT = ("deepgram", "openai")
HOSTED_TTS = ("openai", "elevenlabs", "cartesia")
HOSTED_KEYS = {
    "deepgram": "deepgram_api_key",
    "openai": "openai_api_key",
    "elevenlabs": "elevenlabs_api_key",
    "cartesia": "cartesia_api_key",
}
_DEFAULT_VOICES = {
    "openai": "alloy",
    "elevenlabs": "21m00Tcm4TlvDq8ikWAM",
    "cartesia": "71a7ad14-091c-4e8e-a314-022ece01c121",
}
_PRESET_NAMES = frozenset(
    {
        "maya",
        "josh",
        "nat",
        "mason",
        "june",
        "ryan",
        "tina",
        "florian",
        "derek",
        "paige",
        "matt",
        "evelyn",
        "alena",
        "karl",
        "dave",
        "keelan",
        "public",
    }
)
"""The hosted product's own voice names: they mean "the default voice" here."""
_OPENAI_TTS_RATE = 24000
"""OpenAI's speech comes at 24 kHz only; the call's output transport resamples it."""


def check_hosted(provider: str, extra: Mapping[str, Any]) -> None:
    """Raise ValueError naming the missing environment variable for a hosted provider."""
    field = HOSTED_KEYS.get(provider)
    if field is not None and not extra.get(field):
        raise ValueError(f"the {provider} provider needs an API key: set CALLFLEET_{field.upper()}")


def _language(code: str) -> Language:
    try:
        return Language(code)
    except ValueError:
        return Language.EN


def hosted_stt(
    provider: str, extra: Mapping[str, Any], *, language: str, keywords: tuple[str, ...]
) -> FrameProcessor:
    check_hosted(provider, extra)
    if provider == "deepgram":
        from pipecat.services.deepgram.stt import DeepgramSTTService

        return DeepgramSTTService(
            api_key=str(extra["deepgram_api_key"]),
            settings=DeepgramSTTService.Settings(
                model=extra.get("stt_model") or "nova-3",
                language=_language(language),
                keyterm=list(keywords) or None,
            ),
        )
    if provider == "openai":
        from pipecat.services.openai.stt import OpenAISTTService

        return OpenAISTTService(
            api_key=str(extra["openai_api_key"]),
            base_url=extra.get("openai_base_url") or None,
            settings=OpenAISTTService.Settings(
                model=extra.get("stt_model") or "gpt-4o-mini-transcribe",
                language=_language(language),
                prompt=" ".join(keywords) or None,
            ),
        )
    raise ValueError(f"STT provider {provider!r} is not a hosted one: {HOSTED_STT}")


def hosted_tts(provider: str, extra: Mapping[str, Any], *, voice: str | None) -> FrameProcessor:
    check_hosted(provider, extra)
    if voice is not None and voice.lower() in _PRESET_NAMES:
        voice = None
    chosen = voice or extra.get("tts_voice") or _DEFAULT_VOICES[provider]
    model = extra.get("tts_model") or None
    if provider == "openai":
        from pipecat.services.openai.tts import OpenAITTSService

        return OpenAITTSService(
            api_key=str(extra["openai_api_key"]),
            base_url=extra.get("openai_base_url") or None,
            sample_rate=_OPENAI_TTS_RATE,
            settings=OpenAITTSService.Settings(voice=chosen, model=model or "gpt-4o-mini-tts"),
        )
    if provider == "elevenlabs":
        from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

        return ElevenLabsTTSService(
            api_key=str(extra["elevenlabs_api_key"]),
            settings=ElevenLabsTTSService.Settings(
                voice=chosen, model=model or "eleven_flash_v2_5"
            ),
        )
    if provider == "cartesia":
        from pipecat.services.cartesia.tts import CartesiaTTSService

        return CartesiaTTSService(
            api_key=str(extra["cartesia_api_key"]),
            settings=CartesiaTTSService.Settings(voice=chosen, model=model or "sonic-2"),
        )
    raise ValueError(f"TTS provider {provider!r} is not a hosted one: {HOSTED_TTS}")

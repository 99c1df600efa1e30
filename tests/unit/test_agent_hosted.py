"""Hosted speech providers: configuration, clear errors, and one real HTTP round trip.

Deepgram, ElevenLabs and Cartesia speak their own protocols to their own clouds,
which CI cannot reach: for them this checks what callfleet owns (which service is
built, with which key, voice and model, and the error when a key is missing). The
OpenAI speech-to-text path is exercised for real against a local HTTP server that
speaks the OpenAI transcription API.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from callfleet.agent.engines import LocalEngines
from callfleet.agent.options import AgentOptions, ProviderSettings
from callfleet.agent.providers.hosted import hosted_stt, hosted_tts
from callfleet.config import Settings

KEYS = {
    "deepgram_api_key": "dg-key",
    "openai_api_key": "oa-key",
    "elevenlabs_api_key": "el-key",
    "cartesia_api_key": "ca-key",
}


@pytest.mark.parametrize(
    ("provider", "service"),
    [("deepgram", "DeepgramSTTService"), ("openai", "OpenAISTTService")],
)
def test_hosted_stt_services_are_built_with_the_call_language(provider: str, service: str) -> None:
    stt = hosted_stt(provider, KEYS, language="es", keywords=("Acme",))
    assert type(stt).__name__ == service
    assert str(stt._settings.language).lower().endswith("es")


@pytest.mark.parametrize(
    ("provider", "service", "default_voice"),
    [
        ("openai", "OpenAITTSService", "alloy"),
        ("elevenlabs", "ElevenLabsTTSService", "21m00Tcm4TlvDq8ikWAM"),
        ("cartesia", "CartesiaTTSService", "71a7ad14-091c-4e8e-a314-022ece01c121"),
    ],
)
def test_hosted_tts_voice_comes_from_the_call_or_the_default(
    provider: str, service: str, default_voice: str
) -> None:
    own = hosted_tts(provider, KEYS, voice="my-voice")
    assert type(own).__name__ == service
    assert own._settings.voice == "my-voice"
    # The hosted product's preset names mean "the default voice" here.
    preset = hosted_tts(provider, KEYS, voice="maya")
    assert preset._settings.voice == default_voice
    configured = hosted_tts(provider, {**KEYS, "tts_voice": "house-voice"}, voice=None)
    assert configured._settings.voice == "house-voice"


@pytest.mark.parametrize("provider", ["deepgram", "elevenlabs", "cartesia", "openai"])
def test_a_missing_key_names_the_variable_to_set(provider: str) -> None:
    field = f"{provider}_api_key"
    settings = ProviderSettings(
        stt=provider if provider in ("deepgram", "openai") else "whisper-local",
        tts=provider if provider != "deepgram" else "espeak",
        extra={k: v for k, v in KEYS.items() if k != field},
    )
    with pytest.raises(ValueError, match=f"CALLFLEET_{field.upper()}"):
        LocalEngines(settings)


def test_unknown_providers_are_refused_at_start_up() -> None:
    with pytest.raises(ValidationError, match="CALLFLEET_TTS_PROVIDER must be one of"):
        Settings(tts_provider="festival")
    with pytest.raises(ValidationError, match="CALLFLEET_STT_PROVIDER must be one of"):
        Settings(stt_provider="sphinx")


def test_settings_feed_the_hosted_providers() -> None:
    settings = Settings(
        stt_provider="openai",
        tts_provider="cartesia",
        openai_api_key="k1",
        cartesia_api_key="k2",
        llm_base_url="http://127.0.0.1:9/v1",
    )
    extra = settings.speech_provider_extra
    assert extra["openai_base_url"] == "http://127.0.0.1:9/v1"  # falls back to the LLM's
    engines = LocalEngines(ProviderSettings(stt="openai", tts="cartesia", extra=extra))
    options = AgentOptions(voice="voice-123")
    assert type(engines.stt(options)).__name__ == "OpenAISTTService"
    assert engines.tts(options)._settings.voice == "voice-123"


class _Transcriber(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        self.seen.append(
            {
                "path": self.path,
                "auth": self.headers.get("authorization"),
                "bytes": len(body),
                "has_wav": b"RIFF" in body,
                "model": b"gpt-4o-mini-transcribe" in body,
            }
        )
        payload = json.dumps({"text": "Yes, Tuesday works for me."}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def transcriber() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Transcriber)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Transcriber.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_openai_stt_transcribes_over_http(transcriber: str) -> None:
    stt = hosted_stt("openai", {**KEYS, "openai_base_url": transcriber}, language="en", keywords=())
    one_second = bytes(32000)  # 16 kHz 16-bit mono

    async def main() -> list[Any]:
        return [frame async for frame in stt.run_stt(_wav(one_second))]

    frames = asyncio.run(main())
    texts = [getattr(f, "text", None) for f in frames]
    assert "Yes, Tuesday works for me." in texts, frames
    (request,) = _Transcriber.seen
    assert request["path"] == "/v1/audio/transcriptions"
    assert request["auth"] == "Bearer oa-key"
    assert request["has_wav"] and request["model"]


def _wav(pcm: bytes, rate: int = 16000) -> bytes:
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()

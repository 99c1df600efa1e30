"""Which accepted fields have no effect in a deployment (`callfleet.domain.capabilities`)."""

from __future__ import annotations

from callfleet.domain.capabilities import Deployment, ineffective_fields, unsupported_row_keys

LOCAL = Deployment(llm=True)
HOSTED = Deployment(tts="elevenlabs", stt="deepgram", llm=True)
SCRIPTED = Deployment(llm=False)
NO_AGENT = Deployment(agent=False)


def names(fields: dict[str, object], deployment: Deployment = LOCAL) -> list[str]:
    return [name for name, _ in ineffective_fields(fields, deployment)]


def test_voice_and_language_depend_on_the_engines() -> None:
    fields: dict[str, object] = {"voice": "mason", "language": "fr"}
    assert names(fields) == ["voice", "language"]
    assert names(fields, HOSTED) == []
    assert names({"voice_id": 7, "voice_preset_id": "p1"}) == ["voice_id", "voice_preset_id"]
    assert names({"voice_id": 0, "voice": ""}) == []  # what the official SDK sends unasked
    assert names({"language": "en-GB"}) == names({"language": "babel-en"}) == []


def test_features_callfleet_lacks_are_named_only_when_asked_for() -> None:
    assert names({"amd": True, "reduce_latency": True, "voice_settings": {"a": 1}}) == [
        "amd",
        "reduce_latency",
        "voice_settings",
    ]
    assert names({"amd": False, "reduce_latency": False}) == []


def test_a_voicemail_retry_needs_answered_by_detection() -> None:
    assert names({"retry": {"wait": 60}}) == ["retry"]
    assert names({"retry": {"max_attempts": 2, "on": ["voicemail"]}}) == ["retry"]
    assert names({"retry": {"wait": 60}, "answered_by_enabled": True}) == []
    assert names({"retry": {"max_attempts": 2}}) == []  # not on voicemail
    assert names({"retry": {"wait": "soon"}}) == []  # refused by the validation instead


def test_a_tool_without_a_url_is_named_by_its_index() -> None:
    tools = [
        {"name": "a", "description": "d", "url": "https://example.com/a"},
        {"name": "b", "description": "d"},
    ]
    assert names({"tools": tools}) == ["tools[1]"]
    assert names({"tools": [{"name": "b"}]}) == []  # malformed: refused instead


def test_what_needs_an_llm_and_what_only_the_scripted_policy_reads() -> None:
    fields: dict[str, object] = {
        "transfer_phone_number": "+12125550100",
        "summary_prompt": "Sum up.",
        "dispositions": [],
        "temperature": 0.3,
        "script": ["Hello?"],
    }
    assert names(fields, SCRIPTED) == ["transfer_phone_number", "temperature", "summary_prompt"]
    assert names(fields, LOCAL) == ["script"]


def test_without_the_agent_no_conversation_field_is_flagged() -> None:
    assert names({"voice": "mason", "amd": True, "retry": {"wait": 60}}, NO_AGENT) == []


def test_unsupported_send_call_keys_in_a_row() -> None:
    row = {"phone_number": "+12125550101", "pathway_id": "p", "name": "Ada", "voicemail": {}}
    assert [name for name, _ in unsupported_row_keys(row)] == ["pathway_id", "voicemail"]

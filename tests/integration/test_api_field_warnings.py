"""Accepted fields that have no effect in the running deployment are named in `warnings`.

The agent-running server here speaks with the local TTS and hears with the English-only
local speech recognizer (the defaults), so a call's `voice` and a non-English `language`
do nothing; `amd` and `reduce_latency` never do; a voicemail `retry` needs answered-by
detection; a tool without a `url` cannot be called, and no tool is without an LLM.
Each is warned about at batch level or per row, naming the row. The calls start far
in the future, so nothing is dialled.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Server

LATER = "2099-01-05 09:00:00 +00:00"
OPEN = {"start": "00:00", "end": "24:00"}


@pytest.fixture
def with_agent(server_factory: Any) -> Server:
    """A server whose answered calls get the AI agent, with the local engines."""
    srv: Server = server_factory(sip=True, simulator_time_scale=1.0, tts_provider="espeak")
    return srv


def by_field(warnings: list[str]) -> dict[str, str]:
    """Each warning keyed by the field it names (the text before the first ': ')."""
    out = {}
    for text in warnings:
        field, _, why = text.partition(": ")
        assert field not in out, f"{field} warned twice: {warnings}"
        out[field] = why
    return out


BATCH = {
    "base_prompt": "Remind {{name}} of the appointment.",
    "call_data": [
        {"phone_number": "+12125550101", "name": "Ada"},
        {"phone_number": "+12125550102", "name": "Bob", "voice": "maya", "pathway_id": "pw-1"},
        {"phone_number": "+12125550103", "name": "Cy", "webhook_events": ["call"]},
        {"phone_number": "+12125550104", "name": "Di", "answered_by_enabled": True},
    ],
    "voice": "mason",
    "language": "es-ES",
    "amd": True,
    "reduce_latency": True,
    "retry": {"wait": 60},
    "tools": [{"name": "lookup", "description": "Look up the caller's order."}],
    "start_time": LATER,
    "calling_window": OPEN,
}


def test_fields_with_no_effect_are_warned_about_at_batch_level_and_per_row(
    with_agent: Server,
) -> None:
    with with_agent.client(with_agent.new_key()) as client:
        resp = client.post("/v1/batches", json=BATCH)
        assert resp.status_code == 200, resp.text
        sent = resp.json()
    assert (sent["call_count"], sent["rejected"]) == (4, [])
    warned = by_field(sent["warnings"])
    assert set(warned) == {
        "voice",
        "language",
        "amd",
        "reduce_latency",
        "retry",
        "tools[0]",
        "tools",
        "call_data[1].voice",
        "call_data[1].pathway_id",
        "call_data[2].webhook_events",
    }
    assert "'mason' has no effect" in warned["voice"]
    assert "CALLFLEET_TTS_PROVIDER" in warned["voice"]
    assert "'maya' has no effect" in warned["call_data[1].voice"]
    assert "English only" in warned["language"]
    assert "CALLFLEET_STT_PROVIDER" in warned["language"]
    assert "answered_by_enabled" in warned["amd"]
    assert "No effect" in warned["reduce_latency"]
    assert "answered_by_enabled: true" in warned["retry"]
    assert "'lookup' has no `url`" in warned["tools[0]"]
    assert "CALLFLEET_LLM_BASE_URL" in warned["tools"]
    assert "`pathway_id` is a Send Call field" in warned["call_data[1].pathway_id"]
    assert "request_data" in warned["call_data[2].webhook_events"]


def test_a_single_call_names_its_fields_with_no_effect(with_agent: Server) -> None:
    body = {
        "phone_number": "+12125550101",
        "task": "Say hello.",
        "voice": "mason",
        "amd": True,
        "start_time": LATER,
        "crm_note": "kept",
    }
    with with_agent.client(with_agent.new_key()) as client:
        resp = client.post("/v1/calls", json=body)
        assert resp.status_code == 200, resp.text
        warnings = resp.json()["warnings"]
    assert warnings[0] == "`crm_note` is not a Send Call field; it was kept in request_data."
    assert set(by_field(warnings[1:])) == {"voice", "amd"}


def test_without_the_agent_only_unsupported_row_keys_are_warned_about(
    server_factory: Any,
) -> None:
    """The rehearsal carrier has no conversation at all, so its fields are not flagged."""
    srv: Server = server_factory(default_cps=1000)
    with srv.client(srv.new_key()) as client:
        resp = client.post("/v1/batches", json=BATCH)
        assert resp.status_code == 200, resp.text
        sent = resp.json()
    assert set(by_field(sent["warnings"])) == {
        "call_data[1].pathway_id",
        "call_data[2].webhook_events",
    }

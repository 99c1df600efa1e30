"""Opt-outs on real calls: the agent hears them, confirms, hangs up, and the number is
on the do-not-call list.

A real server (`callfleet serve`'s wiring, SQLite) dials over SIP and RTP: to the
built-in phone simulator's opt-out person (XX 25, "I'm not interested. Please take
me off your list.", spoken by Piper and heard by the agent's faster-whisper), and
to SIPp through a trunk, which presses the call's `opt_out_digit` as an RFC 4733
event or a SIP INFO. The first call also asks for the AI disclosure (`guard_rails`),
which must be the agent's first words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.peers import Sipp

from callfleet.domain.opt_out import OPT_OUT_LINE
from conftest import Server, wait_for

pytestmark = [
    pytest.mark.slow,
    # The database side is covered on both databases by test_opt_out.py.
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

ALWAYS = {"start": "00:00", "end": "24:00"}
OPTS_OUT = "+12125550125"  # "I'm not interested. Please take me off your list."
FIRST = "Hi, this is Alex from Acme Dental, calling about your appointment."


def _agent_server(server_factory: Any) -> Server:
    srv: Server = server_factory(sip=True, simulator_time_scale=0.3, default_cps=100)
    return srv


def _ended(client: httpx.Client, call_id: str, timeout: float = 90.0) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        d: dict[str, Any] = client.get(f"/v1/calls/{call_id}").json()
        return d if d["completed"] and d.get("postcall_state") in (None, "done") else None

    found: dict[str, Any] = wait_for(done, timeout=timeout, interval=0.5)
    return found


def _said(details: dict[str, Any], user: str) -> list[str]:
    return [t["text"] for t in details["transcripts"] if t["user"] == user]


def test_a_person_who_asks_to_be_taken_off_the_list_ends_on_the_dnc(
    server_factory: Any,
) -> None:
    server = _agent_server(server_factory)
    disclosure = server.settings.ai_disclosure
    with server.client(server.new_key()) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Remind them of the appointment.",
                "first_sentence": FIRST,
                # The agent opens once the person's greeting is over: nobody talks over
                # the disclosure (if they did, it would be said again after their turn).
                "wait_for_greeting": True,
                "script": ["Does Tuesday at ten still work for you?"],
                "guard_rails": ["tcpa:ai_disclosure"],
                "call_data": [{"phone_number": OPTS_OUT}],
                "calling_window": ALWAYS,
            },
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["warnings"] == []  # the guard rail has an effect
        batch_id = resp.json()["batch_id"]
        [call] = client.get(f"/v1/batches/{batch_id}").json()["call_data"]
        details = _ended(client, call["call_id"])

        transcript = details["concatenated_transcript"]
        assert details["status"] == "completed", transcript
        assert details["opted_out"] is True, transcript
        assert details["call_ended_by"] == "ASSISTANT", transcript
        # The disclosure came first, before the first sentence, and is in the transcript.
        agent = _said(details, "assistant")
        assert agent[0].startswith(disclosure) and FIRST in agent[0], transcript
        assert _said(details, "robot")[0] == f"disclosure: {disclosure}"
        assert any(OPT_OUT_LINE in line for line in agent), transcript
        assert any("take me off" in line.lower() for line in _said(details, "user")), transcript
        [note] = [line for line in _said(details, "robot") if line.startswith("opt-out:")]
        assert "the callee said" in note

        entry = client.get(f"/v1/dnc/{OPTS_OUT}").json()["entry"]
        assert (entry["reason"], entry["source"], entry["call_id"]) == (
            "opt-out",
            "call",
            call["call_id"],
        )
        again = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Remind them.",
                "call_data": [{"phone_number": OPTS_OUT}, {"phone_number": "+12125550136"}],
                "calling_window": ALWAYS,
                "start_time": "2099-01-01 09:00:00 -05:00",
            },
        )
        assert again.status_code == 200, again.text
        [rejected] = again.json()["rejected"]
        assert rejected["index"] == 0 and "do-not-call" in rejected["errors"][0]["message"]


@pytest.mark.parametrize(
    ("scenario", "pcaps"),
    [("opt_out_dtmf.xml", ("dtmf_2833_9.pcap",)), ("opt_out_info.xml", ())],
    ids=["rfc4733", "sip-info"],
)
def test_the_opt_out_digit_on_the_keypad_puts_the_number_on_the_dnc(
    server_factory: Any, tmp_path: Path, scenario: str, pcaps: tuple[str, ...]
) -> None:
    server = _agent_server(server_factory)
    callee = "+14155550123"
    with (
        Sipp(tmp_path, scenario, pcaps=pcaps, timeout_s=40) as sipp,
        server.client(server.new_key()) as client,
    ):
        trunk = client.post(
            "/v1/trunks", json={"name": "sipp", "host": "127.0.0.1", "port": sipp.port}
        ).json()["trunk"]
        client.post(
            "/v1/numbers", json={"phone_number": "+12125550100", "trunk_id": trunk["trunk_id"]}
        ).raise_for_status()
        resp = client.post(
            "/v1/calls",
            json={
                "phone_number": callee,
                "from": "+12125550100",
                "task": "Remind them of the appointment.",
                "first_sentence": FIRST,
                "opt_out_digit": "9",
                "calling_window": ALWAYS,
            },
        )
        assert resp.status_code == 200, resp.text
        details = _ended(client, resp.json()["call_id"], timeout=60)
        rc = sipp.wait(20)
        assert rc == 0, f"SIPp saw a wrong dialog (exit {rc}):\n{sipp.log()}"
        transcript = details["concatenated_transcript"]
        assert details["opted_out"] is True, transcript
        assert details["call_ended_by"] == "ASSISTANT", transcript
        assert "the callee pressed 9" in transcript
        assert any(OPT_OUT_LINE in line for line in _said(details, "assistant")), transcript
        entry = client.get(f"/v1/dnc/{callee}").json()["entry"]
        assert (entry["reason"], entry["call_id"]) == ("opt-out", details["call_id"])


def test_an_opt_out_digit_that_is_not_a_key_is_refused(server: Server) -> None:
    with server.client(server.new_key()) as client:
        resp = client.post(
            "/v1/calls", json={"phone_number": OPTS_OUT, "task": "Hi", "opt_out_digit": "x"}
        )
    assert resp.status_code == 400
    [error] = resp.json()["errors"]
    assert error["field"] == "opt_out_digit" and "0-9, * or #" in error["message"]

"""No call before the agent can speak: a server with the AI agent on its calls places
none until the agent's engines are loaded and warm, and `/readyz` says so.

Right after start-up the speech engines are still loading (Whisper, the Piper
processes, one transcription and one synthesis each). A call submitted at once
stays queued while `/readyz` answers 503 naming the agent; once it answers 200 the
call is dialled to the phone simulator over real SIP and RTP, and the agent's
first reply comes as fast as on any later call.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from conftest import Server, wait_for

pytestmark = pytest.mark.slow

DANA = "+12125550100"  # greets, answers two turns and hangs up after about 20 s


def test_no_call_is_dialled_before_the_agent_is_warm(server_factory: Any) -> None:
    srv: Server = server_factory(sip=True, simulator_time_scale=1.0, tts_provider="piper-local")
    with srv.client(srv.new_key()) as client:
        first = client.get("/readyz")
        assert first.status_code == 503, first.text
        assert "AI agent" in first.json()["reason"]
        sent = client.post(
            "/v1/calls",
            json={
                "phone_number": DANA,
                "task": "Remind Dana of Tuesday's appointment.",
                "first_sentence": "Hi Dana, this is the clinic calling.",
                "script": ["Your appointment is on Tuesday at ten.", "Thank you, goodbye."],
                "calling_window": {"start": "00:00", "end": "24:00"},
            },
        )
        assert sent.status_code == 200, sent.text
        call_id = sent.json()["call_id"]
        seen: list[tuple[int, str]] = []  # (readyz status, the call's queue_status)

        def ready() -> bool:
            status = client.get("/readyz").status_code
            call = client.get(f"/v1/calls/{call_id}").json()
            seen.append((status, call["queue_status"]))
            return status == 200

        wait_for(ready, timeout=120, interval=0.05)
        not_ready = [queue for status, queue in seen if status == 503]
        assert not_ready and set(not_ready) == {"queued"}, seen
        details = _ended(client, call_id)
    assert details["status"] == "completed", details
    assert details["answered_by"] in ("", "human"), details
    assert details["latency_ms"], details["concatenated_transcript"]
    latencies = details["latency_ms"]["samples_ms"]
    # The first reply of the process's first call does not wait for a model to load
    # (that cost 3 s and more): it comes about as fast as the call's later replies.
    assert len(latencies) >= 2, latencies
    assert latencies[0] < max(latencies[1:]) + 1000, latencies


def _ended(client: httpx.Client, call_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        details: dict[str, Any] = client.get(f"/v1/calls/{call_id}").json()
        if details["queue_status"] in ("complete", "call_error"):
            return details
        time.sleep(0.5)
    raise AssertionError(f"the call did not end: {details}")

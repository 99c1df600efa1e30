"""A batch sent through the API reaches every outcome of the simulator's table."""

from __future__ import annotations

from conftest import Server, wait_for

NUMBERS = {
    "+12125550101": ("completed", "human"),
    "+12125550145": ("voicemail", "voicemail"),
    "+12125550161": ("busy", None),
    "+12125550172": ("no-answer", "no-answer"),
    "+12125550183": ("declined", None),
    "+12125550194": ("failed", None),
}


def test_batch_outcomes_follow_the_number_table(server: Server) -> None:
    key = server.new_key()
    with server.client(key) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hello {{name}}",
                "call_data": [{"phone_number": n, "name": f"p{i}"} for i, n in enumerate(NUMBERS)],
                "answered_by_enabled": True,
                "calling_window": {"start": "00:00", "end": "24:00"},
            },
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["message"] == "success"
        assert body["call_count"] == len(NUMBERS)
        batch_id = body["batch_id"]

        def done() -> dict | None:
            details = client.get(f"/v1/batches/{batch_id}").json()
            return details if details["analysis"]["completed_calls"] == len(NUMBERS) else None

        details = wait_for(done)
    got = {c["to"]: (c["status"], c["answered_by"] or None) for c in details["call_data"]}
    assert got == NUMBERS

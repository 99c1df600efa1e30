"""Pause, resume and stop of a batch; its export as CSV and JSONL; the richer call lists.

Over HTTP against the real app, on SQLite and PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import sqlalchemy as sa

from callfleet.store.tables import calls
from conftest import Server, wait_for

OPEN = {"start": "00:00", "end": "24:00"}
# The simulator's 00-39 answer and talk 20-60 s; these talk 50 s or more.
TALKERS = [f"+121255501{xx:02d}" for xx in (5, 10, 11, 16, 17, 22, 28, 33, 34, 39)]
RESULTS = [
    "call_id",
    "status",
    "answered_by",
    "attempts",
    "started_at",
    "ended_at",
    "call_length",
    "summary",
    "disposition_tag",
    "opted_out",
    "error_message",
    "recording_url",
]


def _dialled(srv: Server, batch_id: str) -> set[str]:
    """The ids of the batch's calls that have left the queue (admitted or later)."""
    with srv.db.read() as conn:
        rows = conn.execute(
            sa.select(calls.c.id).where(calls.c.batch_id == batch_id, calls.c.state != "queued")
        )
        return {r.id for r in rows}


def _send(client: Any, rows: list[dict[str, Any]], **extra: Any) -> str:
    resp = client.post(
        "/v1/batches",
        json={"base_prompt": "Hi", "call_data": rows, "calling_window": OPEN, **extra},
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["batch_id"])


def test_pause_stops_admissions_and_resume_lets_them_go(server_factory: Any) -> None:
    srv: Server = server_factory(simulator_time_scale=0.02, account_concurrency=1)
    with srv.client(srv.new_key()) as client:
        batch_id = _send(client, [{"phone_number": n} for n in TALKERS[:6]])
        wait_for(lambda: _dialled(srv, batch_id))
        paused = client.post(f"/v1/batches/{batch_id}/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["batch_status"] == "paused"
        at_pause = _dialled(srv, batch_id)
        assert 1 <= len(at_pause) <= 2, at_pause

        # The live call finishes; then many hopper passes (every 0.05 s) admit nothing.
        def idle() -> bool:
            analysis = client.get(f"/v1/batches/{batch_id}").json()["analysis"]
            return bool(analysis["in_progress_calls"] == 0)

        wait_for(idle)
        time.sleep(1.0)
        assert _dialled(srv, batch_id) == at_pause
        details = client.get(f"/v1/batches/{batch_id}").json()
        assert details["batch_params"]["status"] == "paused"
        assert details["batch_params"]["completed_at"] is None
        assert details["analysis"]["queued_calls"] == 6 - len(at_pause)

        resumed = client.post(f"/v1/batches/{batch_id}/resume")
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["batch_status"] == "running"

        def done() -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
            return body if body["batch_params"]["completed_at"] else None

        final = wait_for(done, timeout=60)
        assert final["batch_params"]["status"] == "completed"
        assert final["analysis"]["completed_calls"] == 6
        assert len(_dialled(srv, batch_id)) == 6


def test_pause_resume_stop_are_idempotent_and_refused_when_they_cannot(
    server_factory: Any,
) -> None:
    srv: Server = server_factory(simulator_time_scale=0.05, account_concurrency=1)
    with srv.client(srv.new_key()) as client:
        batch_id = _send(client, [{"phone_number": n} for n in TALKERS[:4]])
        for _ in range(2):
            r = client.post(f"/v1/batches/{batch_id}/pause")
            assert (r.status_code, r.json()["batch_status"]) == (200, "paused"), r.text
            assert r.json()["batch_id"] == batch_id
        for _ in range(2):
            r = client.post(f"/v1/batches/{batch_id}/resume")
            assert (r.status_code, r.json()["batch_status"]) == (200, "running"), r.text
        client.post(f"/v1/batches/{batch_id}/pause")
        # Stopping a paused batch cancels its queued calls.
        first = client.post(f"/v1/batches/{batch_id}/stop")
        assert first.status_code == 200, first.text
        assert first.json()["batch_status"] == "stopped"
        assert first.json()["num_calls"] >= 3
        again = client.post(f"/v1/batches/{batch_id}/stop")
        assert (again.status_code, again.json()["batch_status"]) == (200, "stopped")
        assert again.json()["num_calls"] == 0

        refused = client.post(f"/v1/batches/{batch_id}/resume")
        assert refused.status_code == 409, refused.text
        assert "stopped and cannot be resumed" in refused.json()["message"]
        refused = client.post(f"/v1/batches/{batch_id}/pause")
        assert refused.status_code == 409, refused.text
        assert "stopped" in refused.json()["message"]

        missing = client.post("/v1/batches/no-such-batch/pause")
        assert missing.status_code == 404, missing.text
        assert client.get("/v1/batches/no-such-batch/export").status_code == 404


def test_a_completed_batch_cannot_be_paused(server_factory: Any) -> None:
    srv: Server = server_factory(default_cps=1000)
    with srv.client(srv.new_key()) as client:
        batch_id = _send(client, [{"phone_number": "+12125550101"}])
        wait_for(
            lambda: client.get(f"/v1/batches/{batch_id}").json()["batch_params"]["completed_at"]
        )
        r = client.post(f"/v1/batches/{batch_id}/pause")
        assert r.status_code == 409, r.text
        assert "completed" in r.json()["message"]
        stop = client.post(f"/v1/batches/{batch_id}/stop")
        assert (stop.status_code, stop.json()["batch_status"]) == (200, "completed")


ROWS = [
    {"zeta": "z1", "phone_number": "+12125550101", "alpha": "a, with comma", "n": 1},
    {"zeta": "z2", "phone_number": "+12125550102", "alpha": 'quote " and\nnewline', "n": 2},
    {"zeta": "z3", "phone_number": "+12125550103", "alpha": "ü", "n": 3},
]


def _finished(srv: Server, client: Any, batch_id: str) -> None:
    wait_for(lambda: client.get(f"/v1/batches/{batch_id}").json()["batch_params"]["completed_at"])
    with srv.db.write() as conn:
        conn.execute(
            sa.update(calls)
            .where(calls.c.batch_id == batch_id, calls.c.seq == 1)
            .values(
                summary="They agreed.",
                disposition_tag="agreed",
                analysis={"score": 5, "reason": "yes"},
            )
        )


def test_export_csv_and_jsonl_match_the_input_rows(server_factory: Any) -> None:
    srv: Server = server_factory(default_cps=1000)
    with srv.client(srv.new_key()) as client:
        batch_id = _send(client, ROWS)
        _finished(srv, client, batch_id)
        listed = client.get(f"/v1/batches/{batch_id}").json()["call_data"]

        resp = client.get(f"/v1/batches/{batch_id}/export")
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/csv")
        assert "attachment" in resp.headers["content-disposition"]
        table = list(csv.reader(io.StringIO(resp.text)))
        header = ["zeta", "phone_number", "alpha", "n", *RESULTS, "analysis.score"]
        header.append("analysis.reason")
        assert table[0] == header
        assert len(table) == 1 + len(ROWS)
        for sent, line, call in zip(ROWS, table[1:], listed, strict=True):
            got = dict(zip(header, line, strict=True))
            assert [got[k] for k in sent] == [str(v) for v in sent.values()]
            assert got["call_id"] == call["call_id"]
            assert got["status"] == call["status"]
            assert got["attempts"] == "1"
            assert got["opted_out"] == "false"
        assert table[2][header.index("analysis.score")] == "5"
        assert table[2][header.index("summary")] == "They agreed."
        assert table[1][header.index("analysis.score")] == ""

        resp = client.get(f"/v1/batches/{batch_id}/export", params={"format": "jsonl"})
        assert resp.status_code == 200, resp.text
        lines = [json.loads(x) for x in resp.text.splitlines()]
        assert [list(x) for x in lines] == [header] * len(ROWS)
        for sent, obj in zip(ROWS, lines, strict=True):
            assert {k: obj[k] for k in sent} == sent
        assert lines[1]["analysis.reason"] == "yes"
        assert lines[1]["disposition_tag"] == "agreed"
        assert lines[0]["opted_out"] is False

        bad = client.get(f"/v1/batches/{batch_id}/export", params={"format": "xlsx"})
        assert bad.status_code in (400, 422), bad.text
        assert "format" in bad.text


def test_call_lists_carry_summary_analysis_disposition_opt_out_and_metadata(
    server_factory: Any,
) -> None:
    srv: Server = server_factory(default_cps=1000)
    with srv.client(srv.new_key()) as client:
        batch_id = _send(client, ROWS, metadata={"crm": "c-1"})
        _finished(srv, client, batch_id)
        call_data = client.get(f"/v1/batches/{batch_id}").json()["call_data"]
        listed = client.get("/v1/calls", params={"batch_id": batch_id}).json()["calls"]
        for items in (
            call_data,
            sorted(listed, key=lambda c: [x["call_id"] for x in call_data].index(c["call_id"])),
        ):
            assert [c["summary"] for c in items] == [None, "They agreed.", None]
            assert [c["disposition_tag"] for c in items] == [None, "agreed", None]
            assert items[1]["analysis"] == {"score": 5, "reason": "yes"}
            assert [c["opted_out"] for c in items] == [False] * 3
            assert [c["metadata"] for c in items] == [{"crm": "c-1"}] * 3

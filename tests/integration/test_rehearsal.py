"""Rehearsal and dry run of `POST /v1/batches`, the calls' status filter and the
do-not-call CSV upload: over HTTP against the real app, on SQLite and PostgreSQL.

The rehearsal's promise is that the rows' real numbers are never dialled: one test
gives the account a default trunk that is a UDP socket recording every datagram, and
checks that the rehearsal's calls end (through the built-in simulator) while the
socket hears nothing, and that a real call does reach it.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import sqlalchemy as sa

from callfleet.store.tables import batches, calls
from conftest import Server, wait_for

OPEN = {"start": "00:00", "end": "24:00"}
PROMPT = "Call {{name}} at {{phone_number}} about the {{topic}}."
REAL = [f"+1415555{n:04d}" for n in range(1000, 1008)]
"""Real-looking numbers (not the simulator's 555-01XX): none of them may ever be dialled."""


def _rows(n: int = 6) -> list[dict[str, Any]]:
    return [{"phone_number": REAL[i], "name": f"Person {i}", "topic": "renewal"} for i in range(n)]


def _ended(client: Any, batch_id: str, count: int) -> dict[str, Any] | None:
    details: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
    return details if details["analysis"]["completed_calls"] == count else None


def _dialled_numbers(srv: Server) -> set[str]:
    with srv.db.read() as conn:
        return {r[0] for r in conn.execute(sa.select(calls.c.to_number))}


def test_a_rehearsal_calls_four_personas_for_the_first_rows(server: Server) -> None:
    with server.client(server.new_key()) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": PROMPT,
                "call_data": _rows(),
                "rehearsal": True,
                "label": "Renewals",
                "answered_by_enabled": True,
                "calling_window": OPEN,
                # Nothing listens there: the deliveries stay stored with their bodies.
                "webhook": "http://127.0.0.1:9/call-ended",
                "batch_webhook": "http://127.0.0.1:9/batch-done",
            },
        )
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["call_count"] == 4
        stood_in = out["rehearsal"]["rows"]
        assert [r["persona"] for r in stood_in] == ["person", "talks-over", "silent", "voicemail"]
        assert [r["phone_number"] for r in stood_in] == REAL[:4]
        assert [r["dialled"] for r in stood_in] == [
            "+12125550100",
            "+12125550130",
            "+12125550135",
            "+12125550140",
        ]
        assert any("calling_window" in w for w in out["warnings"]), out["warnings"]
        batch_id = out["batch_id"]
        details = wait_for(lambda: _ended(client, batch_id, 4))
        assert details["batch_params"]["rehearsal"] is True
        listed = client.get("/v1/batches").json()["batches"]
        assert [b["rehearsal"] for b in listed] == [True]
        by_persona = {c["rehearsal_of"]["persona"]: c for c in details["call_data"]}
        assert by_persona["person"]["answered_by"] == "human"
        assert by_persona["voicemail"]["answered_by"] == "voicemail"
        for call in details["call_data"]:
            assert call["to"] == call["rehearsal_of"]["dialled"]
            assert call["to"] not in REAL
        # The prompt is the real row's, its real number included.
        first = client.get(f"/v1/calls/{by_persona['person']['call_id']}").json()
        assert first["request_data"]["phone_number"] == REAL[0]
        assert first["request_data"]["name"] == "Person 0"
        # Nothing was dialled, or is waiting to be dialled, at a real number.
        assert _dialled_numbers(server).isdisjoint(REAL)
        assert client.get("/v1/calls", params={"to_number": REAL[0]}).json()["count"] == 0

        # Its webhooks say it is a rehearsal.
        def deliveries() -> list[dict[str, Any]] | None:
            listed = client.get("/v1/webhooks/deliveries").json()["deliveries"]
            return listed if len(listed) == 5 else None

        bodies = [
            client.get(f"/v1/webhooks/deliveries/{d['id']}").json()["delivery"]["payload"]
            for d in wait_for(deliveries)
        ]
        batch_body = next(b for b in bodies if "counts" in b)
        assert batch_body["rehearsal"] is True
        call_bodies = [b for b in bodies if "counts" not in b]
        assert sorted(b["rehearsal_of"]["index"] for b in call_bodies) == [0, 1, 2, 3]
        # A rehearsal takes no appended rows.
        more = client.post(f"/v1/batches/{batch_id}/calls", json={"call_data": _rows(1)})
        assert more.status_code == 409, more.text
        assert "rehearsal" in more.json()["message"]


def test_rehearsal_rows_skip_do_not_call_rows_and_name_csv_lines(server: Server) -> None:
    with server.client(server.new_key()) as client:
        client.post("/v1/dnc", json={"phone_number": REAL[1]}).raise_for_status()
        text = "phone_number,name,topic\n" + "".join(
            f"{r['phone_number']},{r['name']},renewal\n" for r in _rows(8)
        )
        resp = client.post(
            "/v1/batches",
            files={"file": ("rows.csv", text.encode(), "text/csv")},
            data={
                "batch": json.dumps({"base_prompt": PROMPT, "rehearsal": True, "rehearsal_rows": 6})
            },
        )
        assert resp.status_code == 200, resp.text
        out = resp.json()
        # Row 1 is on the do-not-call list: the rehearsal takes the next rows instead.
        assert [r["index"] for r in out["rehearsal"]["rows"]] == [0, 2, 3, 4, 5, 6]
        assert [r["line"] for r in out["rehearsal"]["rows"]] == [2, 4, 5, 6, 7, 8]
        assert [r["persona"] for r in out["rehearsal"]["rows"]][4:] == ["person", "talks-over"]
        assert out["rehearsal"]["rows"][4]["dialled"] == "+12125550101"
        assert [r["line"] for r in out["rejected"]] == [3]
        wait_for(lambda: _ended(client, out["batch_id"], 6))
    # The do-not-call entry of the real number was not touched by the rehearsal.
    assert _dialled_numbers(server).isdisjoint(REAL)


def test_bad_rehearsal_requests_are_400_naming_the_field(server: Server) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rehearsal": True, "rehearsal_rows": 21}, "rehearsal_rows"),
        ({"rehearsal": True, "rehearsal_rows": 0}, "rehearsal_rows"),
        ({"rehearsal": True, "rehearsal_rows": "4"}, "rehearsal_rows"),
        ({"rehearsal_rows": 3}, "rehearsal_rows"),
        ({"rehearsal": "yes"}, "rehearsal"),
        ({"rehearsal": True, "test_mode": True}, "test_mode"),
        ({"dry_run": 1}, "dry_run"),
    ]
    with server.client(server.new_key()) as client:
        for extra, field in cases:
            resp = client.post(
                "/v1/batches", json={"base_prompt": PROMPT, "call_data": _rows(2), **extra}
            )
            assert resp.status_code == 400, (extra, resp.text)
            assert field in [e["field"] for e in resp.json()["errors"]], (extra, resp.text)
    with server.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(batches)).scalar() == 0


class _TrunkSocket:
    """A UDP socket posing as the account's trunk: it records whatever reaches it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port: int = self.sock.getsockname()[1]

    def heard(self, seconds: float) -> list[bytes]:
        got: list[bytes] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                got.append(self.sock.recv(65536))
            except TimeoutError:
                continue
        return got

    def close(self) -> None:
        self.sock.close()


def test_a_rehearsal_never_goes_through_the_accounts_trunk(server_factory: Any) -> None:
    srv: Server = server_factory(sip=True, default_cps=100)
    trunk = _TrunkSocket()
    try:
        with srv.client(srv.new_key()) as client:
            made = client.post(
                "/v1/trunks",
                json={"name": "real", "host": "127.0.0.1", "port": trunk.port, "is_default": True},
            )
            assert made.status_code in (200, 201), made.text
            client.post(
                "/v1/numbers",
                json={"phone_number": "+12125550199", "trunk_id": made.json()["trunk"]["trunk_id"]},
            ).raise_for_status()
            resp = client.post(
                "/v1/batches",
                json={
                    "base_prompt": PROMPT,
                    "call_data": _rows(4),
                    "from": "+12125550199",
                    "rehearsal": True,
                },
            )
            assert resp.status_code == 200, resp.text
            batch_id = resp.json()["batch_id"]
            details = wait_for(lambda: _ended(client, batch_id, 4), timeout=60)
            assert trunk.heard(0.5) == [], "a rehearsal call reached the account's trunk"
            statuses = {c["rehearsal_of"]["persona"]: c["status"] for c in details["call_data"]}
            assert statuses["person"] == "completed", details["call_data"]
            for call in details["call_data"]:
                assert call["to"].startswith("+1212555013") or call["to"].startswith("+121255501")
            # The control: a real call from the same number does go out through the trunk.
            real = client.post(
                "/v1/calls",
                json={
                    "phone_number": REAL[0],
                    "task": "Hi",
                    "from": "+12125550199",
                    "calling_window": OPEN,
                },
            )
            assert real.status_code == 200, real.text
            heard = b"".join(trunk.heard(3.0))
            assert b"INVITE sip:" in heard and REAL[0][2:].encode() in heard, heard[:300]
            client.post(f"/v1/calls/{real.json()['call_id']}/stop")
    finally:
        trunk.close()


def test_a_dry_run_renders_the_first_rows_and_stores_nothing(server: Server) -> None:
    rows = _rows(7)
    rows[2]["phone_number"] = "12"
    del rows[4]["topic"]
    with server.client(server.new_key()) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": PROMPT,
                "first_sentence": "Hello {{name}}!",
                "call_data": rows,
                "dry_run": True,
            },
        )
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["dry_run"] is True and "batch_id" not in out
        assert out["call_count"] == 5
        assert [p["index"] for p in out["preview"]] == [0, 1, 3, 5, 6]
        assert out["preview"][0]["rendered_prompt"] == (
            f"Call Person 0 at {REAL[0]} about the renewal."
        )
        assert out["preview"][0]["first_sentence"] == "Hello Person 0!"
        report = out["validation"]["report"]
        assert [r["valid"] for r in report] == [True, True, False, True, False, True, True]
        assert "topic" in report[4]["errors"][0]["message"]
        # As a CSV: each entry also names its line.
        text = "phone_number,name,topic\n+14155551000,Ada,renewal\nnope,Bob,x\n"
        csv_resp = client.post(
            "/v1/batches",
            files={"file": ("rows.csv", text.encode(), "text/csv")},
            data={"batch": json.dumps({"base_prompt": PROMPT, "dry_run": True})},
        )
        assert csv_resp.status_code == 200, csv_resp.text
        csv_out = csv_resp.json()
        assert [r["line"] for r in csv_out["validation"]["report"]] == [2, 3]
        assert csv_out["preview"][0]["line"] == 2
        # A dry run of a rehearsal says who would stand in for which row.
        planned = client.post(
            "/v1/batches",
            json={"base_prompt": PROMPT, "call_data": rows, "dry_run": True, "rehearsal": True},
        ).json()
        assert [r["index"] for r in planned["rehearsal"]["rows"]] == [0, 1, 3, 5]
        assert client.get("/v1/batches").json()["batches"] == []
        assert client.get("/v1/calls").json()["count"] == 0
    with server.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(calls)).scalar() == 0


def test_calls_filter_by_status(server: Server) -> None:
    with server.client(server.new_key()) as client:
        busy, answered = "+12125550160", "+12125550101"
        done = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": busy}, {"phone_number": answered}],
                "calling_window": OPEN,
            },
        ).json()
        wait_for(lambda: _ended(client, done["batch_id"], 2))
        waiting = client.post(
            "/v1/calls",
            json={
                "phone_number": "+12125550102",
                "task": "Hi",
                "start_time": "2099-01-01 09:00:00",
            },
        )
        assert waiting.status_code == 200, waiting.text

        def numbers(status: str) -> list[str]:
            resp = client.get("/v1/calls", params={"status": status})
            assert resp.status_code == 200, resp.text
            return sorted(c["to"] for c in resp.json()["calls"])

        assert numbers("busy") == [busy]
        assert numbers("completed") == [answered]
        assert numbers("queued") == ["+12125550102"]
        assert numbers("live") == []
        bad = client.get("/v1/calls", params={"status": "finished"})
        assert bad.status_code == 400, bad.text
        assert bad.json()["errors"][0]["field"] == "status"
        assert "no-answer" in bad.json()["message"]


def test_upload_a_csv_of_numbers_to_the_do_not_call_list(server: Server) -> None:
    text = (
        "\ufeffName;Phone;Reason\r\n"
        "Ada;+12125550111;asked us\r\n"
        "Bob;not a number;\r\n"
        "Cy;(212) 555-0112;\r\n"
        "Ada again;+12125550111;\r\n"
    )
    with server.client(server.new_key()) as client:
        client.post("/v1/dnc", json={"phone_number": "+12125550112"}).raise_for_status()
        resp = client.post(
            "/v1/dnc",
            files={"file": ("dnc.csv", text.encode(), "text/csv")},
            data={"batch": json.dumps({"reason": "complaint list"})},
        )
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["added"] == 1
        assert out["phone_numbers"] == ["+12125550111", "+12125550112"]
        [bad] = out["rejected"]
        assert (bad["index"], bad["line"], bad["phone_number"]) == (1, 3, "not a number")
        assert "CSV line 3" in bad["errors"][0]["message"]
        entries = {e["phone_number"]: e for e in client.get("/v1/dnc").json()["entries"]}
        assert entries["+12125550111"]["reason"] == "asked us"
        only_bad = client.post("/v1/dnc", files={"file": ("dnc.csv", b"phone\nnope\n", "text/csv")})
        assert only_bad.status_code == 400, only_bad.text
        assert "line 2" in only_bad.json()["errors"][0]["message"]
        not_csv = client.post("/v1/dnc", files={"file": ("x.csv", b"\x00\x01\x02", "text/csv")})
        assert not_csv.status_code == 400, not_csv.text
        extra = client.post(
            "/v1/dnc",
            files={"file": ("dnc.csv", b"phone\n+12125550113\n", "text/csv")},
            data={"batch": json.dumps({"base_prompt": "x"})},
        )
        assert extra.status_code == 400 and "base_prompt" in extra.text

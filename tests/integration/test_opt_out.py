"""Opt-outs through the dispatcher and the API, on SQLite and PostgreSQL.

The carrier here is a double standing in for the agent's report (a callee at
`OPTS_OUT` says "Please take me off your list." and the call comes back
`opted_out`); the agent's own hearing of it, over SIP and RTP with the real speech
recognizer, is `test_agent_opt_out.py`. Everything after the carrier is real: the
runner, `lifecycle.finish` in one transaction, the webhook outbox and a real
receiver, the API's views and export, the submission's do-not-call check.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from tests.integration.test_postcall import (  # noqa: F401  (fixtures)
    REPLY,
    FakeLlm,
    Receiver,
    llm,
    receiver,
)

from callfleet.dispatch import lifecycle
from callfleet.store.tables import calls, dnc
from callfleet.telephony.carrier import (
    AnsweredBy,
    CallEvents,
    DialRequest,
    DialResult,
    EndedBy,
    Outcome,
    TranscriptTurn,
)
from conftest import wait_for

OPEN = {"start": "00:00", "end": "24:00"}
OPTS_OUT = "+12125550125"
OTHER = "+12125550101"
LATER = "2099-01-01 09:00:00 -05:00"


class OptingOutCarrier:
    """Answers every call; the callee at `OPTS_OUT` asks to be taken off the list."""

    def __init__(self, outcome: Outcome = Outcome.COMPLETED) -> None:
        self.outcome = outcome
        self.dialled: list[str] = []

    def describe(self) -> str:
        return "opting-out test carrier"

    async def close(self) -> None:
        return None

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        self.dialled.append(request.to_number)
        now = datetime.now(UTC)
        await events.answered()
        opts_out = request.to_number == OPTS_OUT
        said = "Please take me off your list." if opts_out else "Sure, go on."
        return DialResult(
            self.outcome,
            answered_by=AnsweredBy.HUMAN,
            answered_at=now - timedelta(seconds=8),
            ended_at=now,
            ended_by=EndedBy.ASSISTANT,
            transcript=[
                TranscriptTurn("assistant", "Hi, this is Ana from Bright Dental.", now),
                TranscriptTurn("user", said, now),
            ],
            opted_out=opts_out,
        )


def _batch(client: httpx.Client, numbers: list[str], **fields: Any) -> dict[str, Any]:
    body = {
        "base_prompt": "Book a cleaning.",
        "call_data": [{"phone_number": n} for n in numbers],
        "calling_window": OPEN,
        **fields,
    }
    resp = client.post("/v1/batches", json=body)
    assert resp.status_code == 200, resp.text
    sent: dict[str, Any] = resp.json()
    return sent


def _batch_calls(client: httpx.Client, batch_id: str) -> dict[str, dict[str, Any]]:
    body = client.get(f"/v1/batches/{batch_id}", params={"include_calls": "true"}).json()
    return {c["to"]: c for c in body["call_data"]}


def test_an_opt_out_puts_the_number_on_the_dnc_and_cancels_its_queued_calls(
    server_factory: Any,
    receiver: Receiver,  # noqa: F811
) -> None:
    server = server_factory(OptingOutCarrier(), default_cps=1000)
    key = server.new_key()
    with server.client(key) as client:
        # Calls to the number waiting for later: in another batch, and a single call.
        later = _batch(client, [OPTS_OUT, OTHER], start_time=LATER)
        single = client.post(
            "/v1/calls",
            json={"phone_number": OPTS_OUT, "task": "Hi", "start_time": LATER},
        )
        assert single.status_code == 200, single.text
        # The batch that rings now.
        now = _batch(client, [OPTS_OUT], webhook=receiver.url + "/call")

        hook = wait_for(lambda: receiver.on("/call"), timeout=30)[0]
        assert hook["to"] == OPTS_OUT and hook["opted_out"] is True
        call_id = hook["call_id"]
        details = client.get(f"/v1/calls/{call_id}").json()
        assert details["opted_out"] is True and details["status"] == "completed"
        assert _batch_calls(client, now["batch_id"])[OPTS_OUT]["opted_out"] is True

        entry = client.get(f"/v1/dnc/{OPTS_OUT}").json()
        assert entry["on_list"] is True
        assert entry["entry"]["reason"] == "opt-out"
        assert entry["entry"]["source"] == "call"
        assert entry["entry"]["call_id"] == call_id

        # The queued calls to that number were canceled in the same transaction,
        # with the reason; the other number's call still waits.
        waiting = _batch_calls(client, later["batch_id"])
        assert waiting[OPTS_OUT]["status"] == "canceled"
        assert waiting[OPTS_OUT]["error_message"].startswith("opt-out")
        assert call_id in waiting[OPTS_OUT]["error_message"]
        assert waiting[OPTS_OUT]["opted_out"] is False  # it is not where they opted out
        assert waiting[OTHER]["queue_status"] == "queued" and waiting[OTHER]["status"] is None
        canceled = client.get(f"/v1/calls/{single.json()['call_id']}").json()
        assert canceled["status"] == "canceled" and canceled["error_message"].startswith("opt-out")

        export = client.get(f"/v1/batches/{now['batch_id']}/export").text
        [row] = list(csv.DictReader(io.StringIO(export)))
        assert row["opted_out"] == "true"

        # A second batch to that number: the row is rejected at submission.
        again = _batch(client, [OPTS_OUT, "+12125550102"])
        assert again["call_count"] == 1
        [rejected] = again["rejected"]
        assert rejected["index"] == 0 and "do-not-call" in rejected["errors"][0]["message"]


def test_an_opted_out_call_is_never_retried(server_factory: Any) -> None:
    carrier = OptingOutCarrier(Outcome.VOICEMAIL)  # an outcome the retry policy names
    server = server_factory(carrier, default_cps=1000)
    key = server.new_key()
    with server.client(key) as client:
        sent = _batch(
            client,
            [OPTS_OUT, OTHER],
            answered_by_enabled=True,
            retry={"max_attempts": 3, "delay_minutes": 0, "on": ["voicemail"]},
        )
        batch_id = sent["batch_id"]
        wait_for(
            lambda: (
                client.get(f"/v1/batches/{batch_id}").json()["batch_params"]["status"]
                == "completed"
            ),
            timeout=30,
        )
        listed = _batch_calls(client, batch_id)
    assert listed[OPTS_OUT]["attempt"] == 1 and listed[OPTS_OUT]["opted_out"] is True
    assert listed[OTHER]["attempt"] == 3  # the same outcome without an opt-out is retried
    assert carrier.dialled.count(OPTS_OUT) == 1


def _queued_call_ids(db: Any, number: str) -> list[str]:
    with db.read() as conn:
        return [
            r[0]
            for r in conn.execute(
                sa.select(calls.c.id).where(calls.c.to_number == number, calls.c.state == "queued")
            )
        ]


def test_the_opt_out_is_all_or_nothing_with_the_calls_end(server_factory: Any) -> None:
    """`record_opt_out` writes in the caller's transaction: rolled back, nothing stays."""
    server = server_factory(OptingOutCarrier(), default_cps=1000)
    key = server.new_key()
    with server.client(key) as client:
        first = _batch(client, [OPTS_OUT, OTHER], start_time=LATER)
        _batch(client, [OPTS_OUT], start_time=LATER)
    [a, b] = _queued_call_ids(server.db, OPTS_OUT)
    with server.db.read() as conn:
        account_id = conn.execute(sa.select(calls.c.account_id).where(calls.c.id == a)).scalar()
    now = datetime.now(UTC)

    class Crash(Exception):
        pass

    with pytest.raises(Crash), server.db.write() as conn:
        assert lifecycle.record_opt_out(conn, account_id, a, OPTS_OUT, now, source="call") == 1
        raise Crash  # the process dies before the call's end commits
    assert sorted(_queued_call_ids(server.db, OPTS_OUT)) == sorted([a, b])
    with server.db.read() as conn:
        assert conn.execute(sa.select(dnc)).first() is None

    with server.db.write() as conn:
        assert lifecycle.record_opt_out(conn, account_id, a, OPTS_OUT, now, source="call") == 1
    assert _queued_call_ids(server.db, OPTS_OUT) == [a]  # the other batch's call: canceled
    with server.db.read() as conn:
        row = conn.execute(sa.select(dnc)).one()
        flagged = conn.execute(sa.select(calls.c.opted_out).where(calls.c.id == a)).scalar()
    assert (row.phone_number, row.reason, row.call_id) == (OPTS_OUT, "opt-out", a)
    assert flagged is True
    with server.client(key) as client:
        assert _batch_calls(client, first["batch_id"])[OTHER]["queue_status"] == "queued"


def test_a_do_not_contact_disposition_puts_the_number_on_the_dnc(
    server_factory: Any,
    llm: FakeLlm,  # noqa: F811
    receiver: Receiver,  # noqa: F811
) -> None:
    llm.respond = lambda _body: {**REPLY, "disposition_tag": "DO_NOT_CONTACT"}
    server = server_factory(OptingOutCarrier(), llm_base_url=llm.url, default_cps=1000)
    key = server.new_key()
    with server.client(key) as client:
        later = _batch(client, [OTHER], start_time=LATER)
        now = _batch(client, [OTHER], webhook=receiver.url + "/call")
        hook = wait_for(lambda: receiver.on("/call"), timeout=30)[0]
        assert hook["disposition_tag"] == "DO_NOT_CONTACT"
        assert hook["opted_out"] is True
        entry = client.get(f"/v1/dnc/{OTHER}").json()["entry"]
        assert (entry["reason"], entry["source"], entry["call_id"]) == (
            "opt-out",
            "disposition",
            hook["call_id"],
        )
        assert _batch_calls(client, later["batch_id"])[OTHER]["status"] == "canceled"
        assert _batch_calls(client, now["batch_id"])[OTHER]["opted_out"] is True

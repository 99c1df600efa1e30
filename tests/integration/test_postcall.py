"""Post-call summary, analysis and disposition against a real OpenAI-compatible HTTP server.

The LLM is a small chat-completions server on 127.0.0.1 (started here) that answers
canned JSON and records every request; webhooks go to a real receiver. Calls end
through the real dispatcher with a carrier double that answers and returns a
transcript, or, for the crash case, through the real lifecycle functions with no
post-call worker running, after which fresh workers take over.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from callfleet.config import Settings
from callfleet.dispatch import lifecycle
from callfleet.dispatch.hopper import Job
from callfleet.dispatch.postcall import (
    FAILURE_PREFIX,
    PostcallOptions,
    PostcallWorker,
    claim_due,
)
from callfleet.dispatch.procrastinate_engine import ProcrastinateEngine, ensure_schema
from callfleet.dispatch.writer import GroupWriter
from callfleet.store.accounts import create_account
from callfleet.store.db import Database
from callfleet.store.ids import new_id
from callfleet.store.migrate import migrate
from callfleet.store.tables import batches, calls, webhook_deliveries
from callfleet.telephony.carrier import (
    AnsweredBy,
    CallEvents,
    DialRequest,
    DialResult,
    EndedBy,
    Outcome,
    TranscriptTurn,
)
from callfleet.worker import CallWorker
from conftest import Server, free_port, wait_for

OPEN = {"start": "00:00", "end": "24:00"}
NOBODY_HOME = "+12125550199"  # the carrier double never gets an answer from this one

REPLY = {
    "summary": "Jo answered and booked a cleaning for Tuesday at 3 pm.",
    "analysis": {"email": "jo@example.com", "wants_appointment": "yes", "budget": "$1,200"},
    "disposition_tag": "booked",
}
SCHEMA = {"email": "string", "wants_appointment": "boolean", "budget": "number"}


# -- the LLM: a real HTTP server speaking the chat-completions protocol -------------------


@dataclass
class FakeLlm:
    """`respond(body)` gives the JSON object to answer, or an HTTP status to fail with."""

    respond: Callable[[dict[str, Any]], dict[str, Any] | int]
    delay_s: float = 0.0
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def prompts(self) -> list[str]:
        with self.lock:
            return [r["messages"][-1]["content"] for r in self.requests]


def _serve(llm: FakeLlm) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            with llm.lock:
                llm.requests.append(body)
            if llm.delay_s:
                time.sleep(llm.delay_s)
            answer = llm.respond(body) if self.path == "/v1/chat/completions" else 404
            if isinstance(answer, int):
                payload = json.dumps({"error": {"message": "canned failure"}}).encode()
                self.send_response(answer)
            else:
                payload = json.dumps(
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model"),
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": json.dumps(answer)},
                            }
                        ],
                    }
                ).encode()
                self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    llm.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, thread


def _default_respond(body: dict[str, Any]) -> dict[str, Any]:
    prompt = body["messages"][-1]["content"]
    if '{"answers": [...]}' in prompt:
        return {"answers": ["Jo", True]}
    return REPLY


@pytest.fixture
def llm() -> Iterator[FakeLlm]:
    fake = FakeLlm(_default_respond)
    httpd, thread = _serve(fake)
    yield fake
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@dataclass
class Receiver:
    url: str = ""
    bodies: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for p, b, _ in self.bodies if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            with state.lock:
                state.bodies.append((self.path, body, time.monotonic()))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


# -- calls that talk ------------------------------------------------------------------


def _conversation(now: datetime) -> list[TranscriptTurn]:
    return [
        TranscriptTurn("assistant", "Hi, this is Ana from Bright Dental. Is this Jo?", now),
        TranscriptTurn("user", "Yes. Tuesday at 3 works; my email is jo@example.com.", now),
    ]


class TalkingCarrier:
    """Answers every call with a short conversation (but never `NOBODY_HOME`)."""

    def describe(self) -> str:
        return "talking test carrier"

    async def close(self) -> None:
        return None

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        now = datetime.now(UTC)
        if request.to_number == NOBODY_HOME:
            return DialResult(Outcome.NO_ANSWER, answered_by=AnsweredBy.NO_ANSWER, ended_at=now)
        await events.answered()
        return DialResult(
            Outcome.COMPLETED,
            answered_by=AnsweredBy.HUMAN,
            answered_at=now - timedelta(seconds=40),
            ended_at=now,
            ended_by=EndedBy.USER,
            transcript=_conversation(now),
        )


def _call(server: Server, key: str, **fields: Any) -> str:
    with server.client(key) as client:
        body = {"phone_number": "+12125550100", "task": "Book a cleaning.", "calling_window": OPEN}
        resp = client.post("/v1/calls", json={**body, **fields})
    assert resp.status_code == 200, resp.text
    call_id: str = resp.json()["call_id"]
    return call_id


def _details(server: Server, key: str, call_id: str) -> dict[str, Any]:
    with server.client(key) as client:
        body: dict[str, Any] = client.get(f"/v1/calls/{call_id}").json()
    return body


def _deliveries(db: Database, event: str) -> list[Any]:
    with db.read() as conn:
        return list(
            conn.execute(
                sa.select(webhook_deliveries)
                .where(webhook_deliveries.c.event == event)
                .order_by(webhook_deliveries.c.created_at)
            )
        )


def test_a_call_gets_summary_analysis_and_disposition_and_its_webhook_carries_them(
    server_factory: Any, llm: FakeLlm, receiver: Receiver
) -> None:
    server = server_factory(TalkingCarrier(), llm_base_url=llm.url, llm_model="fake-model")
    key = server.new_key()
    call_id = _call(
        server,
        key,
        webhook=receiver.url + "/call",
        summary_prompt="Say whether Jo booked, in one sentence.",
        analysis_schema=SCHEMA,
        dispositions=["BOOKED", "NOT_NOW"],
    )
    hook = wait_for(lambda: receiver.on("/call"))[0]
    assert hook["call_id"] == call_id
    assert hook["summary"] == REPLY["summary"]
    # Coerced to the schema's types: "yes" is a boolean, "$1,200" a number.
    assert hook["analysis"] == {
        "email": "jo@example.com",
        "wants_appointment": True,
        "budget": 1200,
    }
    assert hook["disposition_tag"] == "BOOKED"  # the model said "booked"
    assert hook["postcall_state"] == "done"
    details = _details(server, key, call_id)
    for name in ("summary", "analysis", "disposition_tag", "postcall_state"):
        assert details[name] == hook[name]

    assert len(llm.requests) == 1  # all three from one request
    request = llm.requests[0]
    assert request["model"] == "fake-model"
    prompt = llm.prompts()[0]
    assert "Say whether Jo booked, in one sentence." in prompt
    assert "my email is jo@example.com" in prompt
    assert "BOOKED, NOT_NOW" in prompt
    assert '"wants_appointment": "boolean"' in prompt
    time.sleep(0.5)
    assert len(receiver.on("/call")) == 1


def test_the_batch_webhook_waits_for_its_calls_post_call_work(
    server_factory: Any, llm: FakeLlm, receiver: Receiver
) -> None:
    llm.delay_s = 0.8  # a slow model: the batch must not complete before it answers
    server = server_factory(
        TalkingCarrier(), llm_base_url=llm.url, default_cps=1000, account_concurrency=5
    )
    key = server.new_key()
    with server.client(key) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Book a cleaning.",
                "call_data": [
                    {"phone_number": "+12125550101"},
                    {"phone_number": "+12125550102"},
                    {"phone_number": NOBODY_HOME},
                ],
                "calling_window": OPEN,
                "webhook": receiver.url + "/call",
                "batch_webhook": receiver.url + "/batch",
            },
        )
    assert resp.status_code == 200, resp.text
    batch_id = resp.json()["batch_id"]

    batch_hook = wait_for(lambda: receiver.on("/batch"), timeout=30)[0]
    assert batch_hook["batch_id"] == batch_id
    assert batch_hook["status"] == "completed"
    assert batch_hook["counts"] == {"completed": 2, "no-answer": 1}
    with server.db.read() as conn:
        states = dict(
            conn.execute(
                sa.select(calls.c.to_number, calls.c.postcall_state).where(
                    calls.c.batch_id == batch_id
                )
            ).all()
        )
    assert states == {"+12125550101": "done", "+12125550102": "done", NOBODY_HOME: None}
    # Every call webhook was written before the batch's, the answered ones with a summary.
    call_rows = _deliveries(server.db, "call.completed")
    batch_rows = _deliveries(server.db, "batch.completed")
    assert len(call_rows) == 3 and len(batch_rows) == 1
    assert max(r.created_at for r in call_rows) <= batch_rows[0].created_at
    summaries = {r.payload["to"]: r.payload["summary"] for r in call_rows}
    assert summaries == {
        "+12125550101": REPLY["summary"],
        "+12125550102": REPLY["summary"],
        NOBODY_HOME: None,
    }
    time.sleep(1.0)
    assert len(receiver.on("/batch")) == 1
    assert len(llm.requests) == 2  # the unanswered call needs no summary


# -- a process killed between the end of a call and its summary ------------------------


def _insert_call(db: Database, *, webhook: str, params: dict[str, Any]) -> tuple[str, str]:
    """An admitted call of a one-call batch with a batch webhook; (call id, batch id)."""
    now = datetime.now(UTC)
    call_id, batch_id = new_id(), new_id()
    with db.write() as conn:
        account = create_account(conn, "postcall")
        conn.execute(
            sa.insert(batches).values(
                id=batch_id,
                account_id=account.id,
                base_prompt="Book a cleaning.",
                call_params={},
                status="running",
                batch_webhook=webhook + "/batch",
                total_calls=1,
                remaining=1,
                created_at=now,
            )
        )
        conn.execute(
            sa.insert(calls).values(
                id=call_id,
                account_id=account.id,
                batch_id=batch_id,
                to_number="+12125550100",
                task="Book a cleaning.",
                params=params,
                request_data={},
                webhook=webhook + "/call",
                state="admitted",
                queue_status="allocated",
                max_duration=30.0,
                not_before=now,
                created_at=now,
                admitted_at=now,
            )
        )
    return call_id, batch_id


def _end_with_transcript(
    db: Database, call_id: str, *, postcall: bool, ago: timedelta = timedelta(0)
) -> str | None:
    now = datetime.now(UTC) - ago
    with db.write() as conn:
        assert lifecycle.claim(conn, call_id, 1, "caller:1", now, 30.0) is not None
        return lifecycle.finish(
            conn,
            call_id,
            1,
            DialResult(
                Outcome.COMPLETED,
                answered_by=AnsweredBy.HUMAN,
                answered_at=now - timedelta(seconds=30),
                ended_at=now,
                transcript=_conversation(now),
            ),
            now,
            worker="caller:1",
            postcall=postcall,
        )


def _row(db: Database, table: Any, row_id: str) -> Any:
    with db.read() as conn:
        return conn.execute(sa.select(table).where(table.c.id == row_id)).one()


FAST = PostcallOptions(poll_interval_s=0.1, llm_timeout_s=5, llm_backoff_s=(0.1, 0.2))


def test_a_summary_left_by_a_killed_process_is_made_once_by_the_next(
    db: Database, database_url: str, tmp_path: Any, llm: FakeLlm
) -> None:
    call_id, batch_id = _insert_call(
        db, webhook="http://hooks.example", params={"analysis_schema": SCHEMA}
    )
    # The call ends in a process that then dies before any post-call work.
    assert _end_with_transcript(db, call_id, postcall=True) == "ended"
    call = _row(db, calls, call_id)
    assert (call.state, call.postcall_state, call.summary) == ("ended", "pending", None)
    batch = _row(db, batches, batch_id)
    assert (batch.remaining, batch.completed_at) == (1, None)  # not complete yet
    assert _deliveries(db, "call.completed") == []  # the webhook waits for the summary

    # Another process took the work and died with it: its lease has to run out first.
    with db.write() as conn:
        taken = claim_due(conn, "dead:1", datetime.now(UTC), lease_s=0.5, limit=10)
    assert [c.call_id for c in taken] == [call_id]

    settings = Settings(
        data_dir=tmp_path, database_url=database_url, llm_base_url=llm.url, llm_model="m"
    )

    async def two_fresh_processes() -> None:
        writers = [GroupWriter(db), GroupWriter(db)]
        workers = [PostcallWorker(w, settings, f"fresh:{i}", FAST) for i, w in enumerate(writers)]
        for w in writers:
            w.start()
        for worker in workers:
            await worker.start()
        try:
            deadline = time.monotonic() + 20
            while _row(db, calls, call_id).postcall_state == "pending":
                assert time.monotonic() < deadline, "post-call work was not picked up"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # room for a duplicate to show up
        finally:
            for worker in workers:
                await worker.stop()
            for w in writers:
                w.stop()

    asyncio.run(two_fresh_processes())
    call = _row(db, calls, call_id)
    assert call.postcall_state == "done"
    assert call.summary == REPLY["summary"]
    assert call.analysis == {"email": "jo@example.com", "wants_appointment": True, "budget": 1200}
    assert call.disposition_tag is None  # "booked" is not one of the built-ins
    assert call.lease_owner is None and call.lease_until is None
    assert len(llm.requests) == 1
    hooks = _deliveries(db, "call.completed")
    assert len(hooks) == 1
    assert hooks[0].payload["summary"] == REPLY["summary"]
    assert len(_deliveries(db, "batch.completed")) == 1
    batch = _row(db, batches, batch_id)
    assert (batch.remaining, batch.status) == (0, "completed")
    assert batch.completed_at is not None


def test_a_clean_stop_hands_its_work_back_at_once(
    db: Database, database_url: str, tmp_path: Any, llm: FakeLlm
) -> None:
    call_id, _batch = _insert_call(db, webhook="http://hooks.example", params={})
    _end_with_transcript(db, call_id, postcall=True)
    llm.delay_s = 3.0  # the first process stops while its request is in flight
    settings = Settings(data_dir=tmp_path, database_url=database_url, llm_base_url=llm.url)

    async def scenario() -> None:
        writer = GroupWriter(db)
        writer.start()
        first = PostcallWorker(writer, settings, "first:1", FAST)
        await first.start()
        try:
            deadline = time.monotonic() + 10
            while not llm.requests:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await first.stop()
            row = _row(db, calls, call_id)
            assert (row.postcall_state, row.lease_owner) == ("pending", None)
            llm.delay_s = 0.0
            second = PostcallWorker(writer, settings, "second:1", FAST)
            await second.start()
            try:
                while _row(db, calls, call_id).postcall_state == "pending":
                    assert time.monotonic() < deadline + 10
                    await asyncio.sleep(0.05)
            finally:
                await second.stop()
        finally:
            writer.stop()

    asyncio.run(scenario())
    assert _row(db, calls, call_id).postcall_state == "done"
    assert len(_deliveries(db, "call.completed")) == 1


def test_a_procrastinate_worker_does_the_post_call_work_of_its_calls(
    pg_url: str, tmp_path: Any, llm: FakeLlm
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=pg_url,
        engine="procrastinate",
        default_cps=1000,
        worker_stalled_s=1.0,
        llm_base_url=llm.url,
        log_level="warning",
    )
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    ensure_schema(db)
    try:
        call_id, _batch = _insert_call(db, webhook="http://hooks.example", params={})
        engine = ProcrastinateEngine(settings, db)
        with db.write() as conn:
            engine.enqueue(conn, [Job(call_id, 1)])
        worker = CallWorker(settings, concurrency=2, carrier=TalkingCarrier())

        async def scenario() -> None:
            task = asyncio.create_task(worker.run())
            try:
                deadline = time.monotonic() + 30
                while _row(db, calls, call_id).postcall_state != "done":
                    assert time.monotonic() < deadline, "the worker did not summarize its call"
                    await asyncio.sleep(0.05)
            finally:
                worker.stop()
                await asyncio.wait_for(task, 30)

        asyncio.run(scenario())
        assert _row(db, calls, call_id).summary == REPLY["summary"]
        assert len(_deliveries(db, "call.completed")) == 1
        assert len(llm.requests) == 1
    finally:
        db.dispose()


# -- failures and the absence of an LLM --------------------------------------------------


def test_llm_down_fails_the_work_clearly_and_still_sends_the_webhook(
    server_factory: Any, receiver: Receiver
) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    server = server_factory(TalkingCarrier(), llm_base_url=down)
    key = server.new_key()
    call_id = _call(server, key, webhook=receiver.url + "/call", analysis_schema=SCHEMA)
    hook = wait_for(lambda: receiver.on("/call"), timeout=30)[0]
    assert hook["postcall_state"] == "failed"
    assert (hook["summary"], hook["analysis"], hook["disposition_tag"]) == (None, None, None)
    robot = [t["text"] for t in hook["transcripts"] if t["user"] == "robot"]
    assert len(robot) == 1
    assert robot[0].startswith(FAILURE_PREFIX)
    assert "could not reach the LLM" in robot[0]
    assert down not in robot[0]  # the tenant never sees the operator's LLM URL
    assert _details(server, key, call_id)["postcall_state"] == "failed"


def test_an_llm_answering_500_is_retried_then_failed(
    db: Database, database_url: str, tmp_path: Any, llm: FakeLlm
) -> None:
    llm.respond = lambda _body: 503
    call_id, batch_id = _insert_call(db, webhook="http://hooks.example", params={})
    _end_with_transcript(db, call_id, postcall=True)
    settings = Settings(data_dir=tmp_path, database_url=database_url, llm_base_url=llm.url)

    async def scenario() -> None:
        writer = GroupWriter(db)
        writer.start()
        worker = PostcallWorker(writer, settings, "w:1", FAST)
        await worker.start()
        try:
            deadline = time.monotonic() + 20
            while _row(db, calls, call_id).postcall_state == "pending":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        finally:
            await worker.stop()
            writer.stop()

    asyncio.run(scenario())
    assert _row(db, calls, call_id).postcall_state == "failed"
    assert len(llm.requests) == FAST.llm_attempts
    hook = _deliveries(db, "call.completed")[0].payload
    assert "the LLM endpoint answered 503" in hook["transcripts"][-1]["text"]
    assert _row(db, batches, batch_id).status == "completed"  # the batch is not held up


def test_work_nobody_finished_in_time_is_failed_even_by_a_process_without_an_llm(
    db: Database, database_url: str, tmp_path: Any
) -> None:
    call_id, batch_id = _insert_call(db, webhook="http://hooks.example", params={})
    _end_with_transcript(db, call_id, postcall=True, ago=timedelta(hours=2))
    fresh_id, _fresh_batch = _insert_call(db, webhook="http://hooks.example", params={})
    _end_with_transcript(db, fresh_id, postcall=True)
    settings = Settings(data_dir=tmp_path, database_url=database_url)  # no LLM here
    options = PostcallOptions(poll_interval_s=0.1, give_up_after_s=3600)

    async def scenario() -> None:
        writer = GroupWriter(db)
        writer.start()
        worker = PostcallWorker(writer, settings, "no-llm:1", options)
        await worker.start()
        try:
            deadline = time.monotonic() + 10
            while _row(db, calls, call_id).postcall_state == "pending":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
        finally:
            await worker.stop()
            writer.stop()

    asyncio.run(scenario())
    assert _row(db, calls, call_id).postcall_state == "failed"
    assert _row(db, calls, fresh_id).postcall_state == "pending"  # an LLM process's to do
    [hook] = _deliveries(db, "call.completed")
    assert hook.payload["transcripts"][-1]["text"] == (
        FAILURE_PREFIX + "it did not finish within 60 minutes of the call's end."
    )
    assert _row(db, batches, batch_id).status == "completed"


def test_without_an_llm_nothing_is_pending_and_analyze_names_the_setting(
    server_factory: Any, receiver: Receiver
) -> None:
    server = server_factory(TalkingCarrier())
    key = server.new_key()
    call_id = _call(server, key, webhook=receiver.url + "/call", summary_prompt="Summarize.")
    hook = wait_for(lambda: receiver.on("/call"))[0]
    assert (hook["summary"], hook["analysis"], hook["postcall_state"]) == (None, None, None)
    assert hook["transcripts"]  # there was something to summarize, but no LLM
    with server.client(key) as client:
        resp = client.post(
            "/v1/batches",
            json={"base_prompt": "Hi", "call_data": [{"phone_number": NOBODY_HOME}]},
        )
        batch_id = resp.json()["batch_id"]
        for path in (f"/v1/calls/{call_id}/analyze", f"/v1/batches/{batch_id}/analyze"):
            resp = client.post(path, json={"goal": "g", "questions": [["Who?", "string"]]})
            assert resp.status_code == 400, resp.text
            assert "CALLFLEET_LLM_BASE_URL" in resp.json()["message"]


def test_a_process_without_an_llm_leaves_nothing_pending(db: Database) -> None:
    call_id, batch_id = _insert_call(db, webhook="http://hooks.example", params={})
    assert _end_with_transcript(db, call_id, postcall=False) == "ended"
    call = _row(db, calls, call_id)
    assert (call.postcall_state, call.lease_until) == (None, None)
    assert len(_deliveries(db, "call.completed")) == 1
    assert _row(db, batches, batch_id).status == "completed"


# -- the analyze endpoints against the same real server -------------------------------------


def test_analyze_endpoints_answer_through_a_real_llm_server(
    server_factory: Any, llm: FakeLlm
) -> None:
    server = server_factory(TalkingCarrier(), llm_base_url=llm.url, default_cps=1000)
    key = server.new_key()
    with server.client(key) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Book a cleaning.",
                "call_data": [{"phone_number": "+12125550101"}],
                "calling_window": OPEN,
            },
        )
        batch_id = resp.json()["batch_id"]

        def ended() -> list[dict[str, Any]] | None:
            data = client.get(f"/v1/batches/{batch_id}").json()
            done = data.get("batch_params", {}) and data["analysis"]["completed_calls"] == 1
            return data["call_data"] if done else None

        call_id = wait_for(ended)[0]["call_id"]
        questions = [["Who answered?", "string"], ["Did they book?", "boolean"]]
        one = client.post(
            f"/v1/calls/{call_id}/analyze", json={"goal": "g", "questions": questions}
        )
        assert one.status_code == 200, one.text
        assert one.json()["answers"] == [["Jo", True]]
        many = client.post(
            f"/v1/batches/{batch_id}/analyze", json={"goal": "g", "questions": questions}
        )
        assert many.status_code == 200, many.text
        assert many.json()["answers"] == {call_id: ["Jo", True]}
        kept = client.get(f"/v1/batches/{batch_id}/analysis").json()["analysis"]
        # Stored answers come back as strings, the shape the official SDK reads.
        assert [a["answers"] for a in kept] == [["Jo", "True"], ["Jo", "True"]]
    analyze_prompts = [p for p in llm.prompts() if "Who answered?" in p]
    assert len(analyze_prompts) == 2
    assert all("my email is jo@example.com" in p for p in analyze_prompts)


def test_an_analyze_call_to_a_failing_llm_is_a_502(server_factory: Any, llm: FakeLlm) -> None:
    llm.respond = lambda _body: 500
    server = server_factory(TalkingCarrier(), llm_base_url=llm.url)
    key = server.new_key()
    call_id = _call(server, key)
    with server.client(key) as client:
        resp = client.post(f"/v1/calls/{call_id}/analyze", json={"questions": [["Who?", "string"]]})
    assert resp.status_code == 502, resp.text
    assert "the LLM endpoint answered 500" in resp.json()["message"]


# -- the Send Call fields at the API ----------------------------------------------------


def test_post_call_fields_of_the_wrong_type_are_400_naming_field_and_row(
    server_factory: Any,
) -> None:
    server = server_factory()
    key = server.new_key()
    with server.client(key) as client:
        for name, value in (
            ("summary_prompt", 5),
            ("analysis_prompt", ["x"]),
            ("analysis_schema", "email"),
            ("analysis_schema", {"email": 5}),
            ("dispositions", "BOOKED"),
            ("dispositions", ["BOOKED", 3]),
            ("dispositions", [""]),
            ("available_tags", [True]),
        ):
            resp = client.post(
                "/v1/calls", json={"phone_number": "+12125550100", "task": "Hi", name: value}
            )
            assert resp.status_code == 400, (name, value, resp.text)
            fields = [e["field"] for e in resp.json()["errors"]]
            assert all(f.startswith(name) for f in fields) and fields, (name, value, fields)

        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "calling_window": OPEN,
                "call_data": [
                    {"phone_number": "+12125550101", "analysis_schema": {"when": "date"}},
                    {"phone_number": "+12125550102", "analysis_schema": {"a": {"b": 1}}},
                    {"phone_number": "+12125550103", "dispositions": ["A", ""]},
                ],
            },
        )
    assert resp.status_code == 200, resp.text
    sent = resp.json()
    assert sent["call_count"] == 1
    assert [[e["field"] for e in r["errors"]] for r in sent["rejected"]] == [
        ["call_data[1].analysis_schema.a.b"],
        ["call_data[2].dispositions[1]"],
    ]

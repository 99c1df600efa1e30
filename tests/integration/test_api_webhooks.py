"""Webhooks end to end: a real receiver on 127.0.0.1, signatures checked with `standardwebhooks`.

The per-call webhook carries the call's details object, the batch webhook arrives once
with counts by outcome, every delivery and attempt is visible through the API, and a
receiver that fails first is retried.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from conftest import Server, wait_for

OPEN = {"start": "00:00", "end": "24:00"}
LATER = "2099-01-01 09:00:00"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every POST; `plan[path]` lists the statuses to answer with, then 200s."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    plan: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with state.lock:
                state.requests.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                planned = state.plan.get(self.path, [])
                status = planned.pop(0) if planned else 200
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

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


@pytest.fixture
def fast(server_factory: Any) -> Server:
    """A server whose calls-per-second pacing does not slow the tests down."""
    srv: Server = server_factory(default_cps=1000)
    return srv


def all_delivered(client: Any, count: int) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = client.get("/v1/webhooks/deliveries").json()["deliveries"]
        ok = len(rows) == count and all(d["state"] == "delivered" for d in rows)
        return rows if ok else None

    result: list[dict[str, Any]] = wait_for(check)
    return result


def test_call_and_batch_webhooks_are_signed_and_complete(fast: Server, receiver: Receiver) -> None:
    with fast.client(fast.new_key()) as client:
        secret = client.get("/v1/webhooks/secret").json()["secret"]
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "calling_window": OPEN,
                "webhook": f"{receiver.url}/calls",
                "batch_webhook": f"{receiver.url}/batch",
                "call_data": [
                    {"phone_number": "+12125550101"},
                    {"phone_number": "+12125550102", "webhook": f"{receiver.url}/vip"},
                    {"phone_number": "+12125550161"},
                    {"phone_number": "+12125550183"},
                ],
            },
        )
        assert resp.status_code == 200, resp.text
        batch_id = resp.json()["batch_id"]

        deliveries = all_delivered(client, 5)
        call_hooks = receiver.on("/calls") + receiver.on("/vip")
        assert len(call_hooks) == 4
        assert [r.json()["to"] for r in receiver.on("/vip")] == ["+12125550102"]

        verifier = Webhook(secret)
        by_id = {d["id"]: d for d in deliveries}
        for request in receiver.requests:
            assert request.headers["content-type"] == "application/json"
            payload = verifier.verify(request.body, request.headers)
            delivery = by_id[request.headers["webhook-id"]]
            assert (delivery["attempts"], delivery["last_status_code"]) == (1, 200)
            assert delivery["url"] == f"{receiver.url}{request.path}"
            assert payload == request.json()
        for request in call_hooks:
            payload = request.json()
            assert payload == client.get(f"/v1/calls/{payload['call_id']}").json()
            assert payload["batch_id"] == batch_id
            assert by_id[request.headers["webhook-id"]]["event"] == "call.completed"
        assert sorted(r.json()["status"] for r in call_hooks) == [
            "busy",
            "completed",
            "completed",
            "declined",
        ]

        [batch_hook] = receiver.on("/batch")
        summary = batch_hook.json()
        assert (summary["batch_id"], summary["status"], summary["total_calls"]) == (
            batch_id,
            "completed",
            4,
        )
        assert summary["counts"] == {"completed": 2, "busy": 1, "declined": 1}
        assert summary["created_at"] and summary["completed_at"]
        assert summary["stopped_at"] is None
        assert by_id[batch_hook.headers["webhook-id"]]["event"] == "batch.completed"

        detail = client.get(f"/v1/webhooks/deliveries/{batch_hook.headers['webhook-id']}")
        delivered = detail.json()["delivery"]
        assert delivered["payload"] == summary
        assert [(a["attempt"], a["status_code"], a["error"]) for a in delivered["attempt_log"]] == [
            (1, 200, None)
        ]
        only_batch = client.get("/v1/webhooks/deliveries", params={"batch_id": batch_id}).json()
        assert len(only_batch["deliveries"]) == 5

    # The signature really binds the body and the secret.
    with pytest.raises(WebhookVerificationError):
        verifier.verify(batch_hook.body + b" ", batch_hook.headers)
    other_secret = "whsec_" + "A" * 32
    with pytest.raises(WebhookVerificationError):
        Webhook(other_secret).verify(batch_hook.body, batch_hook.headers)


def test_a_failing_receiver_is_retried_and_every_attempt_is_logged(
    server_factory: Any, receiver: Receiver
) -> None:
    srv: Server = server_factory(default_cps=1000, webhook_retry_scale=0.001)
    receiver.plan["/flaky"] = [500]
    with srv.client(srv.new_key()) as client:
        secret = client.get("/v1/webhooks/secret").json()["secret"]
        resp = client.post(
            "/v1/calls",
            json={
                "phone_number": "+12125550101",
                "task": "Hi",
                "calling_window": OPEN,
                "webhook": f"{receiver.url}/flaky",
            },
        )
        assert resp.status_code == 200, resp.text
        call_id = resp.json()["call_id"]
        [delivery] = all_delivered(client, 1)
        assert (delivery["attempts"], delivery["last_status_code"]) == (2, 200)
        assert delivery["call_id"] == call_id
        detail = client.get(f"/v1/webhooks/deliveries/{delivery['id']}").json()["delivery"]
        log = [(a["attempt"], a["status_code"], a["error"]) for a in detail["attempt_log"]]
        assert log == [(1, 500, "HTTP 500"), (2, 200, None)]

    first, second = receiver.on("/flaky")
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery["id"]
    assert first.body == second.body
    for request in (first, second):
        assert Webhook(secret).verify(request.body, request.headers)["call_id"] == call_id


def test_a_stopped_batch_reports_its_cancelled_calls(fast: Server, receiver: Receiver) -> None:
    with fast.client(fast.new_key()) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "start_time": LATER,
                "webhook": f"{receiver.url}/calls",
                "batch_webhook": f"{receiver.url}/batch",
                "call_data": [{"phone_number": "+12125550101"}, {"phone_number": "+12125550102"}],
            },
        )
        assert resp.status_code == 200, resp.text
        batch_id = resp.json()["batch_id"]
        assert client.post(f"/v1/batches/{batch_id}/stop").json()["num_calls"] == 2
        all_delivered(client, 3)
    [batch_hook] = receiver.on("/batch")
    summary = batch_hook.json()
    assert (summary["status"], summary["counts"]) == ("stopped", {"canceled": 2})
    assert summary["stopped_at"] and summary["completed_at"]
    statuses = [(r.json()["status"], r.json()["error_message"]) for r in receiver.on("/calls")]
    assert statuses == [("canceled", "Cancelled: the batch was stopped.")] * 2

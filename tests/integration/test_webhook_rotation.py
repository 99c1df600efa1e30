"""Rotating the webhook secret: for a day deliveries carry two signatures, the new secret's
and the old one's, so a receiver can switch over at its own pace; then only the new one.

A real receiver on 127.0.0.1 checks every delivery with the `standardwebhooks` reference
library, once with the old secret and once with the new.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from callfleet.clock import utcnow
from callfleet.store.tables import accounts
from conftest import Server, wait_for

OPEN = {"start": "00:00", "end": "24:00"}
Delivered = tuple[dict[str, str], bytes]


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Delivered]]]:
    got: list[Delivered] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", got
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def one_delivery(client: httpx.Client, url: str, got: list[Delivered]) -> Delivered:
    """Place one call with a webhook and return the delivery the receiver got."""
    seen = len(got)
    resp = client.post(
        "/v1/calls",
        json={"phone_number": "+12125550101", "task": "Hi", "webhook": url, "calling_window": OPEN},
    )
    assert resp.status_code == 200, resp.text
    wait_for(lambda: len(got) > seen, timeout=30)
    return got[seen]


def verifies(secret: str, delivery: Delivered) -> bool:
    headers, body = delivery
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def test_after_a_rotation_both_secrets_verify_for_a_day_then_only_the_new(
    server_factory: Any, receiver: tuple[str, list[Delivered]]
) -> None:
    url, got = receiver
    srv: Server = server_factory(default_cps=1000)
    with srv.client(srv.new_key()) as client:
        before = client.get("/v1/webhooks/secret").json()
        old = before["secret"]
        assert before["previous_secret_expires_at"] is None

        rotate = {"idempotency-key": "rotate-1"}
        first = client.post("/v1/webhooks/secret/rotate", json={}, headers=rotate)
        assert first.status_code == 200, first.text
        new = first.json()["secret"]
        assert new != old and new.startswith("whsec_")
        expires = datetime.fromisoformat(first.json()["previous_secret_expires_at"])
        assert abs(expires - (utcnow() + timedelta(hours=24))) < timedelta(minutes=1)
        # The same Idempotency-Key does not rotate again: it answers with the same secret.
        again = client.post("/v1/webhooks/secret/rotate", json={}, headers=rotate)
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        now = client.get("/v1/webhooks/secret").json()
        assert now["secret"] == new
        assert now["previous_secret_expires_at"] == first.json()["previous_secret_expires_at"]

        during = one_delivery(client, url, got)
        assert len(during[0]["webhook-signature"].split()) == 2
        assert verifies(new, during)
        assert verifies(old, during)

        # A day later (the column the overlap is read from, moved to the past).
        with srv.db.write() as conn:
            conn.execute(
                sa.update(accounts).values(
                    previous_webhook_secret_expires_at=utcnow() - timedelta(seconds=1)
                )
            )
        assert client.get("/v1/webhooks/secret").json()["previous_secret_expires_at"] is None
        after = one_delivery(client, url, got)
        assert len(after[0]["webhook-signature"].split()) == 1
        assert verifies(new, after)
        assert not verifies(old, after)


def test_a_leaked_secret_can_stop_signing_at_once(
    server_factory: Any, receiver: tuple[str, list[Delivered]]
) -> None:
    url, got = receiver
    srv: Server = server_factory(default_cps=1000)
    with srv.client(srv.new_key()) as client:
        old = client.get("/v1/webhooks/secret").json()["secret"]
        for bad in (-1, 169, "soon", True):
            resp = client.post("/v1/webhooks/secret/rotate", json={"previous_secret_hours": bad})
            assert resp.status_code == 400, resp.text
            assert resp.json()["errors"][0]["field"] == "previous_secret_hours"
            assert "168" in resp.text or "number" in resp.text
        assert client.post("/v1/webhooks/secret/rotate", json={"ttl": 1}).status_code == 400
        assert client.get("/v1/webhooks/secret").json()["secret"] == old  # nothing rotated

        resp = client.post("/v1/webhooks/secret/rotate", json={"previous_secret_hours": 0})
        assert resp.status_code == 200, resp.text
        assert resp.json()["previous_secret_expires_at"] is None
        delivery = one_delivery(client, url, got)
        assert verifies(resp.json()["secret"], delivery)
        assert not verifies(old, delivery)

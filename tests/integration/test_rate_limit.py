"""The per-key API rate limit, through HTTP against the real app.

A burst past the limit gets 429 in the error envelope with `Retry-After`; another
key is unaffected; after `Retry-After` seconds the key passes again. The operations
endpoints are never limited, and `off` switches the limit off.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError

from callfleet.config import Settings


def test_a_burst_past_the_limit_gets_429_with_retry_after(server_factory: Any) -> None:
    server = server_factory(api_rate_limit="5/second;1000/minute")
    key_a, key_b = server.new_key("a"), server.new_key("b")
    with server.client(key_a) as client:
        answers = [client.get("/v1/batches") for _ in range(12)]
    codes = [r.status_code for r in answers]
    assert codes[:5] == [200] * 5, codes
    assert 429 in codes, codes
    refused = next(r for r in answers if r.status_code == 429)
    body = refused.json()
    assert body["status"] == "error"
    assert "rate limit" in body["message"].lower() and "5 per 1 second" in body["message"]
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 2
    with server.client(key_b) as other:
        assert other.get("/v1/batches").status_code == 200  # another key: its own budget
    time.sleep(retry_after)
    with server.client(key_a) as client:
        assert client.get("/v1/batches").status_code == 200


def test_operations_endpoints_and_off_are_not_limited(server_factory: Any) -> None:
    limited = server_factory(api_rate_limit="2/second")
    with limited.client() as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert [client.get(path).status_code for _ in range(6)] == [200] * 6, path
    unlimited = server_factory(api_rate_limit="off")
    key = unlimited.new_key()
    with unlimited.client(key) as client:
        assert {client.get("/v1/batches").status_code for _ in range(40)} == {200}


def test_a_malformed_rate_limit_is_refused_at_start_up() -> None:
    with pytest.raises(ValidationError, match="CALLFLEET_API_RATE_LIMIT"):
        Settings(api_rate_limit="lots per second")

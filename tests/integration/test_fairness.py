"""Fair admission across accounts, through the real API and dispatcher.

One account's large batch must not hold another account's single call back: the
hopper shares each pass, and each freed slot, between the accounts with due calls.
The carrier records the order in which calls reach it, which is the order the
hopper admitted them in (on SQLite and PostgreSQL alike).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from callfleet.telephony.carrier import CallEvents, DialRequest, DialResult, Outcome
from conftest import Server, wait_for

ALWAYS = {"start": "00:00", "end": "24:00"}
LONE_CALLEE = "+19175550100"


class OrderCarrier:
    """Answers every call, holds it `hold_s`, and records the order calls arrive in."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.hold_s = hold_s
        self.dials: list[tuple[str, float]] = []

    def describe(self) -> str:
        return "order-recording carrier"

    async def close(self) -> None:
        return None

    async def place_call(self, request: DialRequest, events: CallEvents) -> DialResult:
        self.dials.append((request.to_number, time.monotonic()))
        await asyncio.sleep(self.hold_s)
        return DialResult(Outcome.COMPLETED)

    def position(self, number: str, after: float = 0.0) -> int | None:
        """How many calls reached the carrier after `after` before `number` did."""
        later = [n for n, t in list(self.dials) if t >= after]
        return later.index(number) if number in later else None


def _numbers(n: int) -> list[str]:
    # Distinct valid US numbers, none of them the lone callee's.
    area_codes = ["212", "213", "312", "415", "503", "617", "702", "808", "206", "305"]
    return [f"+1{area_codes[i // 1000]}555{i % 1000:04d}" for i in range(n)]


def _send(server: Server, key: str, numbers: list[str], **extra: Any) -> str:
    with server.client(key) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": n} for n in numbers],
                "calling_window": ALWAYS,
                **extra,
            },
        )
    assert resp.status_code == 200, resp.text
    batch_id: str = resp.json()["batch_id"]
    return batch_id


def test_lone_call_is_not_stuck_behind_a_large_batch(server_factory: Any) -> None:
    # Account A (created first, so first in the accounts table) may run thousands of
    # calls at once at any pace; its 2,500 due calls fill more than one pass (2,000
    # admissions). Account B's one call, due at the same moment, must be admitted in
    # the first pass, not after all of A's.
    carrier = OrderCarrier()
    server = server_factory(carrier=carrier, account_concurrency=5000, default_cps=1e6)
    key_a, key_b = server.new_key("big"), server.new_key("small")
    start = (datetime.now(UTC) + timedelta(seconds=12)).replace(microsecond=0)
    start_time = start.strftime("%Y-%m-%d %H:%M:%S")
    _send(server, key_b, [LONE_CALLEE], start_time=start_time)
    _send(server, key_a, _numbers(2500), start_time=start_time)
    assert datetime.now(UTC) < start, "submitting took too long for this test to mean much"
    wait_for(lambda: len(carrier.dials) >= 2501, timeout=60)
    position = carrier.position(LONE_CALLEE)
    assert position is not None and position < 2000, f"B's call came {position}th"


def test_a_freed_slot_goes_to_the_account_with_fewer_live_calls(server_factory: Any) -> None:
    # The process holds 2 live calls. A keeps both busy with a queue of 40; when B
    # submits one call, the next slot to free goes to B (it has none live), not to
    # A's next call. Allow one slot that frees while B's request is in flight.
    carrier = OrderCarrier(hold_s=0.3)
    server = server_factory(
        carrier=carrier, account_concurrency=10, default_cps=1000, max_live_calls=2
    )
    key_a, key_b = server.new_key("big"), server.new_key("small")
    _send(server, key_a, _numbers(40))
    wait_for(lambda: len(carrier.dials) >= 3, timeout=20)
    submitted = time.monotonic()
    _send(server, key_b, [LONE_CALLEE])
    wait_for(lambda: carrier.position(LONE_CALLEE) is not None or len(carrier.dials) >= 40, 30)
    position = carrier.position(LONE_CALLEE, after=submitted)
    assert position is not None and position <= 1, (
        f"B's call came {position}th (None: not before A's 40)"
    )

"""SipCarrier, the carrier port over SIP, against SIPp: outcomes, events, hang-up paths."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.peers import Sipp

from callfleet.telephony.carrier import DialRequest, DialResult, EndedBy, Outcome, TrunkTarget
from callfleet.telephony.sip_carrier import SipCarrier


class RecordingEvents:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def ringing(self) -> None:
        self.seen.append("ringing")

    async def answered(self) -> None:
        self.seen.append("answered")


def _dial(
    sipp: Sipp, *, hangup_after_s: float | None = None, **fields: object
) -> tuple[DialResult, list[str]]:
    async def scenario() -> tuple[DialResult, list[str]]:
        carrier = SipCarrier()
        events = RecordingEvents()
        request = DialRequest(
            call_id="c1",
            attempt=1,
            to_number="+1 555 0100",
            from_number="+15550199",
            trunk=TrunkTarget("127.0.0.1", sipp.port, username="alice", password="s3cret"),
            **fields,  # type: ignore[arg-type]
        )
        if hangup_after_s is not None:
            asyncio.get_running_loop().call_later(hangup_after_s, request.hangup.set)
        try:
            result = await carrier.place_call(request, events)
            await asyncio.sleep(0.1)  # let final ACK/200 retransmissions settle
        finally:
            await carrier.close()
        return result, events.seen

    result = asyncio.run(scenario())
    rc = sipp.wait(15)
    assert rc == 0, f"SIPp exit code {rc}\n{sipp.log()}"
    return result


def test_answered_until_the_remote_hangs_up(tmp_path: Path) -> None:
    with Sipp(tmp_path, "answer_remote_bye.xml") as sipp:
        result, seen = _dial(sipp)
    assert result.outcome is Outcome.COMPLETED
    assert result.ended_by is EndedBy.USER
    assert result.answered_at is not None and result.ended_at is not None
    assert (result.ended_at - result.answered_at).total_seconds() >= 0.9
    assert seen == ["ringing", "answered"]


def test_answered_until_the_dispatcher_hangs_up(tmp_path: Path) -> None:
    with Sipp(tmp_path, "auth_early_dtmf.xml", pcaps=("dtmf_2833_1.pcap",)) as sipp:
        result, seen = _dial(sipp, hangup_after_s=1.5)
    assert (result.outcome, result.ended_by, result.sip_code) == (
        Outcome.COMPLETED,
        EndedBy.ASSISTANT,
        200,
    )
    assert seen == ["ringing", "answered"]


def test_max_duration_ends_the_call(tmp_path: Path) -> None:
    with Sipp(tmp_path, "answer.xml", extra=["-rtp_echo"]) as sipp:
        result, _ = _dial(sipp, max_duration_s=0.5)
    assert (result.outcome, result.ended_by) == (Outcome.COMPLETED, EndedBy.ASSISTANT)


@pytest.mark.parametrize(
    ("scenario", "outcome", "code", "retry_after"),
    [
        ("busy.xml", Outcome.BUSY, 486, None),
        ("unavailable_retry_after.xml", Outcome.FAILED, 503, 120.0),
        ("ring_cancel.xml", Outcome.NO_ANSWER, 487, None),
    ],
)
def test_unanswered_outcomes(
    tmp_path: Path, scenario: str, outcome: Outcome, code: int, retry_after: float | None
) -> None:
    with Sipp(tmp_path, scenario) as sipp:
        result, _ = _dial(sipp, ring_timeout_s=1.0)
    assert (result.outcome, result.sip_code, result.retry_after_s) == (outcome, code, retry_after)


def test_no_trunk_is_a_failed_result_not_an_exception() -> None:
    async def scenario() -> DialResult:
        carrier = SipCarrier()
        request = DialRequest(call_id="c", attempt=1, to_number="1", from_number=None)
        return await carrier.place_call(request, RecordingEvents())

    result = asyncio.run(scenario())
    assert result.outcome is Outcome.FAILED and "trunk" in (result.error_message or "")

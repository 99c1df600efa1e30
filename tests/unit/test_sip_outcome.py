"""SIP final responses -> carrier outcomes."""

from __future__ import annotations

import pytest

from callfleet.telephony.carrier import Outcome
from callfleet.telephony.sip.invite import InviteResult
from callfleet.telephony.sip.outcome import DEFAULT_RETRY_AFTER_S, failed_invite_result


@pytest.mark.parametrize(
    ("status", "outcome", "message_part"),
    [
        (486, Outcome.BUSY, None),
        (600, Outcome.BUSY, None),
        (408, Outcome.NO_ANSWER, None),
        (480, Outcome.NO_ANSWER, None),
        (603, Outcome.DECLINED, None),
        (404, Outcome.FAILED, "invalid number"),
        (484, Outcome.FAILED, "invalid number"),
        (604, Outcome.FAILED, "invalid number"),
        (407, Outcome.FAILED, "authentication"),
        (488, Outcome.FAILED, "SIP 488 Reason"),
        (500, Outcome.FAILED, "SIP 500 Reason"),
    ],
)
def test_status_mapping(status: int, outcome: Outcome, message_part: str | None) -> None:
    result = failed_invite_result(InviteResult(status, "Reason"))
    assert result.outcome is outcome and result.sip_code == status
    assert result.retry_after_s is None
    if message_part is None:
        assert result.error_message is None
    else:
        assert message_part in (result.error_message or "")


def test_503_retries_later_with_or_without_retry_after() -> None:
    assert failed_invite_result(InviteResult(503, "x", retry_after_s=30)).retry_after_s == 30
    assert failed_invite_result(InviteResult(503, "x")).retry_after_s == DEFAULT_RETRY_AFTER_S


def test_our_own_endings() -> None:
    ring = InviteResult(487, "Request Terminated", cancelled_by="ring-timeout")
    assert failed_invite_result(ring).outcome is Outcome.NO_ANSWER
    hung = InviteResult(487, "Request Terminated", cancelled_by="hangup")
    assert failed_invite_result(hung).outcome is Outcome.CANCELED
    lost = failed_invite_result(InviteResult(408, "Timeout", timed_out=True))
    assert lost.outcome is Outcome.FAILED and "no response" in (lost.error_message or "")

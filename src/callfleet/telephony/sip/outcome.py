"""How a failed INVITE maps to the carrier port's `Outcome` (and why, in words).

486/600 busy; 408/480 and our ring timeout no-answer; 603 declined; 404/484/604
an invalid number; 503 a congested network to retry later (Retry-After, or
`DEFAULT_RETRY_AFTER_S`); our hangup event while ringing canceled; anything else
failed with the SIP code and reason in the message.
"""

from __future__ import annotations

from callfleet.telephony.carrier import DialResult, Outcome
from callfleet.telephony.sip.invite import InviteResult

__all__ = ["DEFAULT_RETRY_AFTER_S", "failed_invite_result"]

DEFAULT_RETRY_AFTER_S = 60.0
_BUSY = {486, 600}
_NO_ANSWER = {408, 480}
_INVALID = {404: "number not found", 484: "address incomplete", 604: "number does not exist"}


def failed_invite_result(result: InviteResult, *, endpoint: str | None = None) -> DialResult:
    """The `DialResult` of an INVITE that did not produce an answered call."""
    code, reason = result.status, result.reason
    detail = f"SIP {code} {reason}".strip()
    if result.cancelled_by == "ring-timeout":
        return DialResult(
            Outcome.NO_ANSWER,
            sip_code=code,
            endpoint=endpoint,
            error_message="no answer before the ring timeout",
        )
    if result.cancelled_by == "hangup":
        return DialResult(
            Outcome.CANCELED,
            sip_code=code,
            endpoint=endpoint,
            error_message="hung up while ringing",
        )
    if result.timed_out:
        return DialResult(
            Outcome.FAILED,
            sip_code=408,
            endpoint=endpoint,
            error_message="no response from the SIP trunk (timeout)",
        )
    if code in _BUSY:
        outcome, message = Outcome.BUSY, None
    elif code in _NO_ANSWER:
        outcome, message = Outcome.NO_ANSWER, None
    elif code == 603:
        outcome, message = Outcome.DECLINED, None
    elif code in _INVALID:
        outcome, message = Outcome.FAILED, f"invalid number: {_INVALID[code]} ({detail})"
    elif code == 503:
        retry = result.retry_after_s if result.retry_after_s is not None else DEFAULT_RETRY_AFTER_S
        return DialResult(
            Outcome.FAILED,
            sip_code=code,
            retry_after_s=retry,
            endpoint=endpoint,
            error_message=f"network busy, retry later ({detail})",
        )
    elif code in (401, 407):
        outcome, message = Outcome.FAILED, f"authentication with the trunk failed ({detail})"
    else:
        outcome, message = Outcome.FAILED, detail
    return DialResult(outcome, sip_code=code, error_message=message, endpoint=endpoint)

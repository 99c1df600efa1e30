"""Blind transfer with SIP REFER (RFC 3515) against SIPp on loopback.

Each scenario answers our INVITE, checks the REFER's `Refer-To` and `Referred-By`,
answers it, reports progress (or not) in NOTIFYs with `message/sipfrag` bodies, and
expects our BYE; SIPp's exit code 0 means it saw exactly that dialog.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.peers import Sipp

from callfleet.telephony.rtp import RtpSession
from callfleet.telephony.sip import SipClient

TARGET = "sip:+15550100@transfer.example.com"


def _transfer(sipp: Sipp, *, timeout_s: float = 8.0) -> tuple[bool, float]:
    """Call SIPp, REFER the call to TARGET, hang up; (refer's answer, seconds it took)."""

    async def scenario() -> tuple[bool, float]:
        async with SipClient() as client:
            rtp = await RtpSession.open()
            try:
                result = await client.invite(
                    f"sip:bot@127.0.0.1:{sipp.port}", media=rtp, ring_timeout_s=10
                )
                assert result.call is not None, result
                started = time.monotonic()
                accepted = await result.call.refer(TARGET, timeout_s=timeout_s)
                took = time.monotonic() - started
                await result.call.hangup()
                return accepted, took
            finally:
                await rtp.close()

    return asyncio.run(scenario())


def _check(sipp: Sipp) -> None:
    rc = sipp.wait(15)
    assert rc == 0, f"SIPp exit code {rc}\n{sipp.log()}"


def test_refer_accepted_and_the_final_notify_reports_200(tmp_path: Path) -> None:
    with Sipp(tmp_path, "refer_accept.xml") as sipp:
        accepted, took = _transfer(sipp)
        _check(sipp)
    assert accepted is True
    assert took < 2.0


def test_refer_declined_with_603(tmp_path: Path) -> None:
    with Sipp(tmp_path, "refer_reject.xml") as sipp:
        accepted, took = _transfer(sipp)
        _check(sipp)
    assert accepted is False
    assert took < 2.0  # the refusal answers at once; no waiting for NOTIFYs


def test_refer_accepted_but_the_target_is_busy(tmp_path: Path) -> None:
    with Sipp(tmp_path, "refer_target_busy.xml") as sipp:
        accepted, took = _transfer(sipp)
        _check(sipp)
    assert accepted is False
    assert took < 2.0


def test_refer_subscription_terminated_without_a_final_status(tmp_path: Path) -> None:
    with Sipp(tmp_path, "refer_terminated.xml") as sipp:
        accepted, took = _transfer(sipp)
        _check(sipp)
    assert accepted is False
    assert took < 2.0


def test_refer_accepted_but_no_notify_times_out(tmp_path: Path) -> None:
    with Sipp(tmp_path, "refer_silent.xml") as sipp:
        accepted, took = _transfer(sipp, timeout_s=1.0)
        _check(sipp)
    assert accepted is False
    assert 0.9 < took < 2.0

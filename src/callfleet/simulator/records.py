"""What the phone simulator saw: one `InviteRecord` per INVITE, one `SimulatedCall` per call.

These are the ground truth tests and load runs check against (no number dialled
twice for one attempt, who hung up, what the caller said). `write_recording` saves
what a call heard as a WAV file.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

import structlog

from callfleet import synth as audio
from callfleet.simulator.rules import Behaviour
from callfleet.telephony.sip.message import SipResponse
from callfleet.telephony.sip.transport import Address

__all__ = [
    "ENDED_BY_CALLER",
    "ENDED_BY_SIMULATOR",
    "InviteRecord",
    "SimulatedCall",
    "normalise_number",
    "write_recording",
]

log = structlog.get_logger(__name__)

ENDED_BY_CALLER = "caller"
ENDED_BY_SIMULATOR = "simulator"
_SEPARATORS = re.compile(r"[\s\-().]")


@dataclass(frozen=True)
class InviteRecord:
    """One INVITE as it arrived (retransmissions and re-INVITEs included)."""

    to_number: str
    call_id: str
    cseq: int
    branch: str
    received_at: datetime
    is_retransmission: bool
    in_dialog: bool = False
    """A re-INVITE inside an established call."""
    challenged: bool = False
    """Answered with the 407 digest challenge (the caller is expected to retry)."""
    source: Address = ("", 0)
    callfleet_call: str | None = None
    """The caller's `X-Callfleet-Call` header (`<call id>;attempt=<n>`), if it sent one."""


@dataclass
class SimulatedCall:
    """What happened to one call (one Call-ID), from the simulator's side."""

    call_id: str
    number: str
    behaviour: Behaviour
    received_at: datetime
    responses: list[int] = field(default_factory=list)
    """Status codes sent for the initial INVITE, in order (retransmissions not repeated)."""
    final_response: SipResponse | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None
    """`caller` (BYE or CANCEL) or `simulator` (our BYE or final response); None while live."""
    requests: list[str] = field(default_factory=list)
    """Methods of the caller's requests after the INVITE (ACK, CANCEL, BYE, ...), in order."""
    beep_at: datetime | None = None
    heard: bytearray = field(default_factory=bytearray)
    """The PCM (8 kHz, 16-bit) heard from the caller: a person's whole call from the
    caller's first RTP packet; a voicemail box's after the beep (or the greeting)."""
    recording_from: datetime | None = None
    """When `heard` started: the answer, or the end of the beep (or greeting)."""
    recording_path: Path | None = None
    """The WAV of `heard`, written when the call ended (with `record_dir` set)."""
    said: list[str] = field(default_factory=list)
    """A person's lines as it started saying them (the greeting first)."""
    latencies_ms: list[float] = field(default_factory=list)
    """For each line a person finished with the caller quiet: the delay from its last
    frame sent to the arrival of the caller's next speech, in ms."""
    barge_in_stop_ms: float | None = None
    """Barge-in numbers: from the start of the line said over the caller to the
    caller's audio going quiet, in ms; None if it never did (or no barge-in)."""
    transferred_to: str | None = None
    """The Refer-To URI of a REFER the caller sent."""
    packets_sent: int = 0
    packets_received: int = 0
    dtmf: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def final_status(self) -> int | None:
        return self.final_response.status if self.final_response is not None else None


def normalise_number(user: str) -> str:
    """The Request-URI user part as E.164: `+12125550101`, `12125550101` -> `+12125550101`."""
    text = _SEPARATORS.sub("", unquote(user).split(";")[0])
    if text.isdigit():
        if len(text) == 10:
            return "+1" + text
        return "+" + text
    return text


def write_recording(record: SimulatedCall, folder: Path | None) -> None:
    """Write what `record` heard to `folder` as a WAV and set `recording_path`.

    Nothing without a folder or when nothing was being recorded; a failed write is
    logged, not raised (the call is over either way).
    """
    if folder is None or record.recording_from is None:
        return
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{record.number}-{record.call_id}")[:120]
    path = folder / f"{name}.wav"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # private before a byte
        audio.write_wav(path, bytes(record.heard))
    except OSError as exc:
        log.warning("simulator_recording_not_written", path=str(path), error=str(exc))
        return
    record.recording_path = path

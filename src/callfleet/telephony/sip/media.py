"""The seam between SIP signalling and the media stream, plus our side of offer/answer.

SIP only needs two things from media: the local RTP port to advertise, and a way
to point the stream at what the remote's SDP says (start, redirect, hold).
`MediaHandler` is that seam; `callfleet.telephony.rtp.RtpSession` implements it.
`LocalSdp` owns our SDP session: one `o=` session id, a version that grows only
when what we send changes (RFC 3264 §8).
"""

from __future__ import annotations

import secrets
from typing import Protocol

from callfleet.telephony.sip.sdp import (
    NegotiatedMedia,
    SessionDescription,
    answer_offer,
    build_offer,
)

__all__ = ["LocalSdp", "MediaHandler"]


class MediaHandler(Protocol):
    @property
    def local_port(self) -> int:
        """The RTP port to put in our SDP."""
        ...

    def apply(self, media: NegotiatedMedia) -> None:
        """Send to and accept from what the remote's SDP describes; called on every change."""
        ...


class LocalSdp:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.session_id = secrets.randbelow(2**31)
        self.version = secrets.randbelow(2**20)
        self._last: bytes | None = None

    def _stamp(self, sdp: SessionDescription) -> bytes:
        sdp.session_version = self.version
        body = sdp.to_bytes()
        if self._last is not None and body != self._last:
            self.version += 1
            sdp.session_version = self.version
            body = sdp.to_bytes()
        self._last = body
        return body

    def offer(self, direction: str = "sendrecv") -> bytes:
        sdp = build_offer(
            self.host,
            self.port,
            session_id=self.session_id,
            version=self.version,
            direction=direction,
        )
        return self._stamp(sdp)

    def answer(self, offer: SessionDescription) -> tuple[bytes, NegotiatedMedia]:
        sdp, media = answer_offer(
            offer, self.host, self.port, session_id=self.session_id, version=self.version
        )
        return self._stamp(sdp), media

"""One simulated call's media: our SDP, the RTP stream, and what the phone hears.

`CallMedia` plays whatever the persona says (a `voices.Conversation`, a voicemail
greeting and beep), keeps what the caller sends in the call's record (up to a
limit) and lets the conversation hear it. It does nothing while `live()` is false:
before the answer and after the call ended.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from callfleet import synth as audio
from callfleet.clock import utcnow
from callfleet.simulator import voices
from callfleet.simulator.records import SimulatedCall
from callfleet.telephony.rtp.session import AudioSource, RtpSession
from callfleet.telephony.sip.media import LocalSdp
from callfleet.telephony.sip.sdp import NegotiatedMedia, SessionDescription

__all__ = ["CallMedia"]


class CallMedia:
    """The RTP side of one answered call; `live` says whether the call is up."""

    def __init__(
        self, record: SimulatedCall, rtp: RtpSession, host: str, live: Callable[[], bool]
    ) -> None:
        self.record = record
        self.rtp = rtp
        self.sdp = LocalSdp(host, rtp.local_port)
        self.last_sdp = b""
        """The SDP we last sent (offered again in a re-INVITE without an offer)."""
        self.conversation: voices.Conversation | None = None
        self._live = live
        self._hear_limit = 0
        rtp.on_dtmf = record.dtmf.append

    def answer(self, offer: SessionDescription) -> tuple[bytes, NegotiatedMedia]:
        """Our SDP answer to `offer` and the media it agrees on (raises `SdpError`)."""
        body, media = self.sdp.answer(offer)
        self.last_sdp = body
        return body, media

    def offer(self) -> bytes:
        body = self.sdp.offer()
        self.last_sdp = body
        return body

    def apply(self, media: NegotiatedMedia) -> None:
        self.rtp.apply(media)

    def keep(self, seconds: float) -> None:
        """Keep at most `seconds` of what the caller sends."""
        self._hear_limit = int(seconds * audio.SAMPLE_RATE) * 2

    def play(self, source: AudioSource) -> None:
        if self._live():
            self.rtp.source = source

    def converse(self, conversation: voices.Conversation) -> None:
        """Speak `conversation`'s lines and let it hear the caller."""
        self.conversation = conversation
        self.record.said = conversation.said
        self.record.latencies_ms = conversation.latencies_ms
        self.play(conversation)

    def start_recording(self) -> None:
        if self._live():
            self.record.recording_from = utcnow()
            self.rtp.on_audio = self._hear

    def mark(self, label: str, *, beep: bool) -> None:
        """A voicemail playlist reached `label`: the message starts after the beep (or
        after the greeting when the box has no beep)."""
        if not self._live():
            return
        if label == "beep":
            self.record.beep_at = utcnow()
        if label == ("beep" if beep else "greeting"):
            self.start_recording()  # the message starts now

    def _hear(self, frame: bytes) -> None:
        if not self._live():
            return
        heard = self.record.heard
        if len(heard) < self._hear_limit:
            heard.extend(frame[: self._hear_limit - len(heard)])
        if self.conversation is not None:
            # the frame played now arrived about as many ticks ago as there are frames
            # queued behind it in the jitter buffer
            self.conversation.hear(frame, age_s=len(self.rtp.jitter) * voices.FRAME_S)

    def stop(self) -> Coroutine[Any, Any, None]:
        """Stop hearing, note the packet counts; returns the RTP close to run."""
        self.rtp.on_audio = None
        self.record.packets_sent = self.rtp.packets_sent
        self.record.packets_received = self.rtp.packets_received
        return self.rtp.close()

"""The persona's script: what a simulated phone does once its INVITE has arrived.

`start` checks the INVITE (unknown numbers get 404, unusable SDP 488), sends 100
and runs the persona's behaviour (see `callfleet.simulator.uas` for the table):
ring, then refuse, or answer and hold a conversation (`voices.Conversation`) or
play a voicemail greeting and record the message.
"""

from __future__ import annotations

import asyncio

from callfleet import synth as audio
from callfleet.simulator import voices
from callfleet.simulator.hesitation import shown, voiced, with_pauses
from callfleet.simulator.rules import Behaviour
from callfleet.simulator.session import SERVER, CallSession
from callfleet.telephony.sip.errors import SdpError
from callfleet.telephony.sip.sdp import negotiate, parse_sdp

__all__ = ["start"]

_CONVERSATION_OVER_S = 4.0
"""How long a person gives the caller to answer, and the quiet that ends a conversation."""


def start(session: CallSession) -> None:
    """Answer a new call's INVITE as its persona does (the script runs as a task)."""
    request = session.tx.request
    if session.persona.behaviour is Behaviour.UNKNOWN:
        session.final(404, "Not Found")
        return
    if request.body and request.content_type == "application/sdp":
        try:
            session.offer = parse_sdp(request.body)
            negotiate(session.offer)
        except SdpError as exc:
            session.final(488, "Not Acceptable Here", [("Warning", f'399 {SERVER} "{exc}"')])
            return
    session.provisional(100, "Trying")
    session.task = session.host.spawn(_script(session))


async def _script(session: CallSession) -> None:
    cfg = session.host.config
    persona = session.persona
    behaviour = persona.behaviour
    fast = cfg.time_scale == 0
    if behaviour is Behaviour.UNREACHABLE:
        await session.pause(persona.ring_s)
        # The network fails the call. Not 503: that asks the caller to retry later.
        session.final(502, "Bad Gateway")
    elif behaviour is Behaviour.BUSY:
        await session.pause(persona.ring_s)
        session.final(486, "Busy Here")
    elif behaviour is Behaviour.DECLINE:
        if not fast:
            session.provisional(180, "Ringing")
            await session.pause(persona.ring_s)
        session.final(603, "Decline")
    elif behaviour is Behaviour.NO_ANSWER:
        session.provisional(180, "Ringing")
        await asyncio.sleep(cfg.max_ring_s)
        session.final(480, "Temporarily Unavailable")
    elif fast:
        if await session.answer():
            await session.wait_ended(cfg.fast_hold_s)
            await session.hangup()
    else:
        session.provisional(180, "Ringing")
        # Render the persona's lines while it rings, so it speaks without delay. The
        # answer never waits for them: a render still running (a cold cache on a busy
        # box, a tiny time scale) only delays the first words.
        rendering = asyncio.ensure_future(voices.speak_all(persona.texts, persona.voice))
        try:
            await session.pause(persona.ring_s)
            if behaviour is Behaviour.HUMAN:
                await _converse(session, rendering)
            else:
                await _voicemail(session, rendering)
        finally:
            rendering.cancel()  # the call ended first


def utterance(text: str, rendered: dict[str, bytes]) -> voices.Utterance:
    """A line as said: `rendered[voiced(text)]`, with its pauses (`[0.6]`) as long as
    written (`callfleet.simulator.hesitation`)."""
    return voices.Utterance(shown(text), with_pauses(text, rendered[voiced(text)]))


async def _converse(session: CallSession, rendering: asyncio.Future[dict[str, bytes]]) -> None:
    """A person: greet, take turns with the caller, hang up after talk_s (scaled)."""
    persona = session.persona
    loop = asyncio.get_running_loop()
    talk_s = persona.talk_s * session.host.config.time_scale
    if not await session.answer(record_s=talk_s + 10.0):
        return
    answered = loop.time()
    media = session.media
    assert media is not None  # answered
    media.start_recording()
    lines = await rendering

    def line(text: str | None) -> voices.Utterance | None:
        return utterance(text, lines) if text else None

    conversation = voices.Conversation(
        line(persona.greeting),
        [utterance(text, lines) for text in persona.lines],
        barge_in=line(persona.barge_in),
        clock=loop.time,
    )
    media.converse(conversation)
    await session.wait_ended(talk_s - (loop.time() - answered))
    # Nobody hangs up mid-sentence or mid-conversation: finish the line, give the
    # caller a moment to answer it, and once they have joined in, say the script and
    # let them fall quiet; all within talk_s of real time (time_scale shortens waits,
    # not talk).
    latest = answered + max(talk_s, persona.talk_s)
    while conversation.under_way(_CONVERSATION_OVER_S) and loop.time() < latest:
        await session.wait_ended(min(0.1, latest - loop.time()))
    await session.hangup()


async def _voicemail(session: CallSession, rendering: asyncio.Future[dict[str, bytes]]) -> None:
    """A voicemail box: the greeting, the beep (or not), then record until hung up."""
    cfg = session.host.config
    beep = session.persona.beep
    longest = cfg.voicemail_max_s * cfg.time_scale
    if not await session.answer(record_s=longest):
        return
    media = session.media
    assert media is not None  # answered
    segments = [("greeting", (await rendering)[session.persona.greeting])]
    if beep:
        segments.append(("beep", audio.beep(cfg.beep_s)))
    media.play(audio.Playlist(segments, on_mark=lambda label: media.mark(label, beep=beep)))
    played = sum(len(pcm) for _, pcm in segments) / (2 * audio.SAMPLE_RATE)
    await session.wait_ended(played + longest)
    await session.hangup()

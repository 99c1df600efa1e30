"""SDP offer/answer and digest authentication (RFC 2617/7616 published examples)."""

from __future__ import annotations

import hashlib

import pytest

from callfleet.telephony.sip.auth import (
    Challenge,
    Credentials,
    build_authorization,
    parse_challenge,
)
from callfleet.telephony.sip.errors import SdpError, SipParseError
from callfleet.telephony.sip.media import LocalSdp
from callfleet.telephony.sip.sdp import build_offer, negotiate, parse_sdp

ANSWER = b"""v=0\r
o=peer 1 2 IN IP4 10.0.0.9\r
s=-\r
c=IN IP4 10.0.0.9\r
t=0 0\r
m=audio 4000 RTP/AVP 8 96\r
a=rtpmap:8 PCMA/8000\r
a=rtpmap:96 telephone-event/8000\r
a=fmtp:96 0-15\r
a=ptime:20\r
"""


def test_offer_contains_g711_and_telephone_event() -> None:
    text = build_offer("192.0.2.1", 20000, session_id=1, version=1).to_bytes().decode()
    assert "m=audio 20000 RTP/AVP 0 8 101" in text
    assert "a=rtpmap:101 telephone-event/8000" in text
    assert "a=fmtp:101 0-16" in text
    assert "c=IN IP4 192.0.2.1" in text and "a=sendrecv" in text


def test_negotiate_answer() -> None:
    media = negotiate(parse_sdp(ANSWER))
    assert (media.remote_host, media.remote_port) == ("10.0.0.9", 4000)
    assert (media.payload_type, media.codec, media.dtmf_payload_type) == (8, "PCMA", 96)
    assert media.we_send and media.we_receive


@pytest.mark.parametrize(
    ("attribute", "direction", "we_send", "we_receive"),
    [("a=sendonly", "sendonly", False, True), ("a=inactive", "inactive", False, False)],
)
def test_hold_answers_mirror_direction(
    attribute: str, direction: str, we_send: bool, we_receive: bool
) -> None:
    offer = parse_sdp(ANSWER + attribute.encode() + b"\r\n")
    local = LocalSdp("192.0.2.1", 20000)
    first = local.offer()
    body, media = local.answer(offer)
    assert media.remote_direction == direction
    assert (media.we_send, media.we_receive) == (we_send, we_receive)
    mirrored = {"sendonly": "recvonly", "inactive": "inactive"}[direction]
    assert f"a={mirrored}".encode() in body
    assert parse_sdp(body).session_version == parse_sdp(first).session_version + 1


def test_old_style_hold_with_zero_address() -> None:
    media = negotiate(parse_sdp(ANSWER.replace(b"c=IN IP4 10.0.0.9", b"c=IN IP4 0.0.0.0")))
    assert not media.we_send


def test_sdp_errors() -> None:
    with pytest.raises(SdpError):
        negotiate(
            parse_sdp(ANSWER.replace(b"RTP/AVP 8 96", b"RTP/AVP 18").replace(b"PCMA", b"G729"))
        )
    with pytest.raises(SdpError):
        negotiate(parse_sdp(b"v=0\r\nc=IN IP4 1.2.3.4\r\n"))
    with pytest.raises(SdpError):
        parse_sdp(b"v=0\r\nm=audio notaport RTP/AVP 0\r\n")


def test_rfc2617_md5_example() -> None:
    challenge = Challenge(
        "testrealm@host.com",
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "MD5",
        ("auth",),
        "5ccc069c403ebaf9f0171e9517f40e41",
    )
    header = build_authorization(
        challenge,
        Credentials("Mufasa", "Circle Of Life"),
        method="GET",
        uri="/dir/index.html",
        cnonce="0a4f113b",
    )
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert "nc=00000001" in header and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in header


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    value = (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    header = build_authorization(
        parse_challenge(value),
        Credentials("Mufasa", "Circle of Life"),
        method="GET",
        uri="/dir/index.html",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert f'response="{expected}"' in header


def test_sess_variant_hashes_nonce_and_cnonce_into_ha1() -> None:
    c = parse_challenge('Digest realm="r", nonce="n", algorithm=SHA-256-sess, qop="auth"')
    header = build_authorization(
        c, Credentials("u", "p"), method="INVITE", uri="sip:x", cnonce="cn"
    )

    def h(s: str) -> str:
        return hashlib.sha256(s.encode()).hexdigest()

    ha1 = h(f"{h('u:r:p')}:n:cn")
    expected = h(f"{ha1}:n:00000001:cn:auth:{h('INVITE:sip:x')}")
    assert f'response="{expected}"' in header and "algorithm=SHA-256-sess" in header


def test_challenge_errors() -> None:
    for bad in ('Basic realm="x"', 'Digest nonce="n"', 'Digest realm="r", nonce="n", algorithm=X'):
        with pytest.raises(SipParseError):
            parse_challenge(bad)
    no_qop = parse_challenge('Digest realm="r", nonce="n"')
    assert "qop=" not in build_authorization(no_qop, Credentials("u", "p"), method="BYE", uri="s")

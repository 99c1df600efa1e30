"""The SIP message parser and serialiser: good input round-trips, bad input raises a parse error."""

from __future__ import annotations

import pytest

from callfleet.telephony.sip.errors import SipParseError
from callfleet.telephony.sip.message import (
    SipRequest,
    SipResponse,
    UnsafeHeaderValue,
    parse_message,
)
from callfleet.telephony.sip.uri import parse_name_addr, parse_uri, parse_via, split_header_list

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8, "
    b"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKold\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice, A." <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"t: Bob <sip:bob@biloxi.example.com>\r\n"
    b"i: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Subject: folded\r\n  header line\r\n"
    b"m: <sip:alice@pc33.atlanta.example.com;transport=UDP>\r\n"
    b"c: application/sdp\r\n"
    b"l: 4\r\n\r\n"
    b"v=0\r\nEXTRA"
)


def test_parses_request_with_compact_and_folded_headers() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    assert msg.method == "INVITE"
    assert msg.call_id == "a84b4c76e66710"
    assert msg.cseq == (314159, "INVITE")
    assert msg.from_addr.tag == "1928301774"
    assert msg.from_addr.display == "Alice, A."
    assert msg.to_addr.tag is None
    assert msg.top_via.branch == "z9hG4bKnashds8"
    assert len(msg.headers.values("Via")) == 2
    assert msg.headers.get("subject") == "folded header line"
    assert msg.content_type == "application/sdp"
    assert msg.body == b"v=0\r"  # exactly Content-Length bytes


def test_round_trip_rewrites_content_length() -> None:
    msg = parse_message(INVITE)
    msg.body = b"hello"
    again = parse_message(msg.to_bytes())
    assert again.body == b"hello"
    assert again.headers.get("Content-Length") == "5"
    assert again.headers.get("Call-ID") == "a84b4c76e66710"


def test_parses_response() -> None:
    raw = (
        b"SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bK1\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(raw)
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason, msg.to_addr.tag) == (486, "Busy Here", "2")


def test_unknown_method_parses() -> None:
    raw = INVITE.replace(b"INVITE sip", b"FROBNICATE sip").replace(
        b"314159 INVITE", b"1 FROBNICATE"
    )
    msg = parse_message(raw)
    assert isinstance(msg, SipRequest) and msg.method == "FROBNICATE"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"garbage\x00\xff\xfe",
        b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n",  # no end of headers
        INVITE.replace(b"l: 4", b"l: 400"),  # truncated body
        INVITE.replace(b"l: 4", b"l: -1"),
        INVITE.replace(b"i: a84b4c76e66710\r\n", b""),  # missing Call-ID
        INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: abc INVITE"),
        INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 1 BYE"),
        INVITE.replace(b"Max-Forwards: 70", b"Max Forwards 70"),
        INVITE.replace(b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia"),
        INVITE.replace(b"t: Bob <sip:bob@biloxi.example.com>", b"t: <sip:bob@"),
        INVITE.replace(b"Via: SIP/2.0/UDP pc33", b"Via: HTTP/1.1 pc33"),
        b"SIP/2.0 999 Nope\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a@h>\r\n"
        b"To: <sip:b@h>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n",
        b"SIP/2.0 20 OK\r\n\r\n",
        b" continuation\r\nVia: x\r\n\r\n",
    ],
)
def test_bad_messages_raise_parse_error(raw: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_message(raw)


def test_oversized_headers_are_refused_not_crashed() -> None:
    big = INVITE.replace(b"Max-Forwards: 70\r\n", b"X-Big: " + b"a" * 70_000 + b"\r\n")
    with pytest.raises(SipParseError):
        parse_message(big)
    nearly = INVITE.replace(b"Max-Forwards: 70\r\n", b"X-Big: " + b"a" * 60_000 + b"\r\n")
    assert len(parse_message(nearly).headers.get("X-Big") or "") == 60_000


def test_uri_and_name_addr_parsing() -> None:
    uri = parse_uri("sip:alice:pw@[::1]:5070;transport=UDP;lr?subject=x")
    assert (uri.user, uri.host, uri.port, uri.transport) == ("alice:pw", "[::1]", 5070, "udp")
    assert uri.hostport() == ("::1", 5070)
    assert str(parse_uri("sip:h.example.com")) == "sip:h.example.com"
    addr = parse_name_addr("sip:bob@h;tag=abc")
    assert addr.tag == "abc" and addr.uri.params == {}
    assert parse_via("SIP/2.0/udp 1.2.3.4:5060 ;branch=z9hG4bKx;rport").branch == "z9hG4bKx"
    assert split_header_list('<sip:a@h;x=",">, "b,c" <sip:b@h>') == [
        '<sip:a@h;x=",">',
        '"b,c" <sip:b@h>',
    ]
    for bad in ("http://x", "sip:", "sip:a@h:99999", "sip:a@h:port"):
        with pytest.raises(SipParseError):
            parse_uri(bad)


@pytest.mark.parametrize(
    ("uri", "name", "value"),
    [
        ("sip:bob@example.com", "From", "<sip:a@example.net\r\nSET pwned 1>"),
        ("sip:bob@example.com", "X-Call", "id\nEvil: 1"),
        ("sip:bob@example.com", "X-Call", "id\x00"),
        ("sip:bob@example.com\r\nEvil: 1", "X-Call", "id"),
    ],
)
def test_serialiser_refuses_line_breaks_in_the_uri_and_header_values(
    uri: str, name: str, value: str
) -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, SipRequest)
    msg.uri = uri
    msg.headers.set(name, value)
    with pytest.raises(UnsafeHeaderValue, match="CR or LF"):
        msg.to_bytes()

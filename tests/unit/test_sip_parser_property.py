"""Property tests: the SIP parser never raises anything but SipParseError, and round-trips;
the SDP parser never raises anything but SdpError."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from callfleet.telephony.sip.errors import SdpError, SipParseError
from callfleet.telephony.sip.message import Headers, SipRequest, parse_message
from callfleet.telephony.sip.sdp import negotiate, parse_sdp

VALID = (
    b"BYE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        parse_message(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(VALID)), st.binary(max_size=64))
def test_mutated_messages_never_crash(cut: int, noise: bytes) -> None:
    for data in (VALID[:cut], VALID[:cut] + noise + VALID[cut:]):
        with contextlib.suppress(SipParseError):
            parse_message(data)


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    _token,
    _token,
    st.integers(1, 2**31 - 1),
    st.binary(max_size=200),
    st.lists(
        st.tuples(
            st.sampled_from(["X-A", "Subject", "User-Agent"]),
            st.text(alphabet="abc xyz;=<>@:", max_size=30).map(str.strip),
        ),
        max_size=5,
    ),
)
def test_built_requests_round_trip(
    call_id: str, tag: str, cseq: int, body: bytes, extra: list[tuple[str, str]]
) -> None:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK" + tag),
            ("From", f"<sip:a@h>;tag={tag}"),
            ("To", "<sip:b@h>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} INFO"),
            *extra,
        ]
    )
    request = SipRequest(headers=headers, body=body, method="INFO", uri="sip:b@h")
    parsed = parse_message(request.to_bytes())
    assert isinstance(parsed, SipRequest)
    assert (parsed.method, parsed.call_id, parsed.cseq, parsed.body) == (
        "INFO",
        call_id,
        (cseq, "INFO"),
        body,
    )
    assert parsed.from_addr.tag == tag


# -- the SDP parser -------------------------------------------------------------------

_SDP_ATTRIBUTES = ["ptime:", "rtpmap:", "fmtp:", "sendrecv", "sendonly", "rtcp:", "x:"]
_sdp_value = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["inf", "-inf", "nan", "1e999", "-1", "65536", "99999999999999999999"]),
    st.builds(lambda a, b: f"{a} {b}", st.integers(-(2**70), 2**70), st.text(max_size=20)),
)
_sdp_line = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from("vosctmab"), _sdp_value),
    st.builds(lambda a, v: f"a={a}{v}", st.sampled_from(_SDP_ATTRIBUTES), _sdp_value),
    st.builds(lambda p, v: f"m=audio {p} RTP/AVP {v}", _sdp_value, _sdp_value),
)


def _sdp_never_crashes(data: bytes) -> None:
    """`parse_sdp` and `negotiate` return, or raise SdpError: nothing else escapes."""
    with contextlib.suppress(SdpError):
        sdp = parse_sdp(data)
        media = negotiate(sdp)
        assert 0 <= media.remote_port <= 65535


def test_sdp_ptime_inf_is_a_parse_error() -> None:
    body = b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=ptime:inf\r\n"
    _sdp_never_crashes(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_sdp_arbitrary_bytes_never_crash(data: bytes) -> None:
    _sdp_never_crashes(data)


@settings(max_examples=500, deadline=None)
@given(st.lists(_sdp_line, max_size=12))
def test_sdp_hostile_lines_never_crash(lines: list[str]) -> None:
    _sdp_never_crashes("\r\n".join(lines).encode("utf-8", "surrogatepass"))

"""Standard Webhooks signing: a published vector, and cross-checks with the reference library."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from callfleet.webhooks.signing import (
    USER_AGENT,
    InvalidSignature,
    new_secret,
    sign,
    signed_headers,
    verify,
)

# The example published with the Standard Webhooks libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = new_secret()
BODY = b'{"call_id":"c_1","status":"completed","summary":"caf\xc3\xa9"}'

msg_ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)
utf8_bodies = st.text(max_size=500).map(str.encode)


def vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": signature,
    }


def test_new_secret_is_prefixed_32_random_bytes() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_sign_matches_published_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_secret_prefix_and_padding_are_optional() -> None:
    bare = VECTOR_SECRET.removeprefix("whsec_")
    assert sign(bare, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    unpadded = new_secret().rstrip("=")
    assert sign(unpadded, "m", 1, b"") == sign(unpadded + "=", "m", 1, b"")


@pytest.mark.parametrize("secret", ["whsec_", "whsec_not base64!", ""])
def test_bad_secret_is_a_value_error(secret: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        sign(secret, "msg", 1, b"{}")


def test_empty_msg_id_is_refused() -> None:
    with pytest.raises(ValueError, match="msg_id"):
        sign(SECRET, "", 1, b"{}")


def test_signed_headers_content() -> None:
    headers = signed_headers(SECRET, "msg_1", BODY, now=1_700_000_000)
    assert headers == {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": sign(SECRET, "msg_1", 1_700_000_000, BODY),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
    assert USER_AGENT == "callfleet-webhooks/0.1"


def test_signed_headers_default_to_current_time() -> None:
    before = int(time.time())
    stamp = int(signed_headers(SECRET, "msg_1", BODY)["webhook-timestamp"])
    assert before <= stamp <= int(time.time())


def test_our_headers_verify_with_reference_library() -> None:
    headers = signed_headers(SECRET, "msg_2", BODY)
    assert Webhook(SECRET).verify(BODY, headers) == {
        "call_id": "c_1",
        "status": "completed",
        "summary": "café",
    }


@given(msg_id=msg_ids, body=utf8_bodies)
def test_reference_library_accepts_whatever_we_sign(msg_id: str, body: bytes) -> None:
    headers = signed_headers(SECRET, msg_id, body)
    Webhook(SECRET).verify(body, headers, json_parse=False)
    verify(SECRET, headers, body)


@given(msg_id=msg_ids, body=utf8_bodies, offset=st.integers(-250, 250))
def test_we_accept_whatever_the_reference_library_signs(
    msg_id: str, body: bytes, offset: int
) -> None:
    now = int(time.time())
    stamp = now + offset
    signature = Webhook(SECRET).sign(msg_id, datetime.fromtimestamp(stamp, tz=UTC), body.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature,
    }
    verify(SECRET, headers, body, now=now)


def test_verify_accepts_vector_at_its_time() -> None:
    verify(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TS + 10)


def test_tampered_body_fails_here_and_in_reference() -> None:
    headers = signed_headers(SECRET, "msg_3", BODY)
    tampered = BODY.replace(b"completed", b"failed")
    with pytest.raises(InvalidSignature, match="no matching signature"):
        verify(SECRET, headers, tampered)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, headers)


def test_tampered_timestamp_fails() -> None:
    now = int(time.time())
    headers = signed_headers(SECRET, "msg_4", BODY, now=now)
    headers["webhook-timestamp"] = str(now + 1)
    with pytest.raises(InvalidSignature, match="no matching signature"):
        verify(SECRET, headers, BODY, now=now)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, headers)


def test_tampered_id_fails() -> None:
    headers = signed_headers(SECRET, "msg_5", BODY)
    headers["webhook-id"] = "msg_6"
    with pytest.raises(InvalidSignature):
        verify(SECRET, headers, BODY)


def test_wrong_secret_fails() -> None:
    headers = signed_headers(SECRET, "msg_7", BODY)
    with pytest.raises(InvalidSignature):
        verify(new_secret(), headers, BODY)


def test_old_timestamp_fails_even_with_valid_signature() -> None:
    old = int(time.time()) - 301
    headers = signed_headers(SECRET, "msg_8", BODY, now=old)
    with pytest.raises(InvalidSignature, match="too old"):
        verify(SECRET, headers, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY, headers)
    verify(SECRET, headers, BODY, tolerance_s=600)


def test_future_timestamp_fails() -> None:
    now = 1_700_000_000
    headers = signed_headers(SECRET, "msg_9", BODY, now=now + 301)
    with pytest.raises(InvalidSignature, match="future"):
        verify(SECRET, headers, BODY, now=now)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_fails(missing: str) -> None:
    headers = signed_headers(SECRET, "msg_10", BODY)
    del headers[missing]
    with pytest.raises(InvalidSignature, match=f"missing {missing}"):
        verify(SECRET, headers, BODY)


@pytest.mark.parametrize("stamp", ["", "soon", "1.7e9", "-5", "１２３", "1_700_000_000"])
def test_malformed_timestamp_fails(stamp: str) -> None:
    headers = vector_headers()
    headers["webhook-timestamp"] = stamp
    with pytest.raises(InvalidSignature):
        verify(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TS)


def test_one_valid_signature_among_several_is_enough() -> None:
    other = sign(new_secret(), VECTOR_ID, VECTOR_TS, VECTOR_BODY)
    for value in (
        f"{other} {VECTOR_SIGNATURE}",
        f"v1a,c29tZXRoaW5n {VECTOR_SIGNATURE}",
        f"v1,!!notbase64!! {VECTOR_SIGNATURE} v2,abc",
        f"garbage   {VECTOR_SIGNATURE}",
    ):
        verify(VECTOR_SECRET, vector_headers(value), VECTOR_BODY, now=VECTOR_TS)


@pytest.mark.parametrize(
    "value",
    [
        "v1a," + VECTOR_SIGNATURE.removeprefix("v1,"),  # right bytes, wrong scheme
        "v2," + VECTOR_SIGNATURE.removeprefix("v1,"),
        VECTOR_SIGNATURE.removeprefix("v1,"),
        "v1,",
        "v1,!!!!",
    ],
)
def test_no_acceptable_signature_fails(value: str) -> None:
    with pytest.raises(InvalidSignature, match="no matching signature"):
        verify(VECTOR_SECRET, vector_headers(value), VECTOR_BODY, now=VECTOR_TS)


def test_header_names_are_case_insensitive() -> None:
    mixed = {k.title(): v for k, v in vector_headers().items()}
    verify(VECTOR_SECRET, mixed, VECTOR_BODY, now=VECTOR_TS)
    verify(VECTOR_SECRET, httpx.Headers(mixed), VECTOR_BODY, now=VECTOR_TS)

"""The official SDK (`bland` 0.3.0), pointed at callfleet, works unchanged.

Every response is parsed by the SDK's own models (pydantic v1, with required and
non-nullable fields), so a shape we get wrong fails here as it would for a user.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from bland.batches.types import BatchCallData
from bland.client import BlandAI
from bland.commons.errors import UnauthorizedError
from bland.commons.types import CustomTool
from bland.core.api_error import ApiError
from bland.types import DynamicData, PronunciationObject, ResponseData

from conftest import Server, wait_for

OPEN = {"start": "00:00", "end": "24:00"}
LATER = "2099-01-01 09:00:00"
CALLER = "+12125550150"


@pytest.fixture
def fast(server_factory: Any) -> Server:
    """A server whose calls-per-second pacing does not slow the tests down."""
    srv: Server = server_factory(default_cps=1000)
    return srv


def close(client: BlandAI) -> None:
    """The SDK never closes the httpx client it makes; do it (pytest errors on the leak)."""
    client._client_wrapper.httpx_client.httpx_client.close()


@pytest.fixture
def account(fast: Server) -> Iterator[tuple[BlandAI, str]]:
    key = fast.new_key()
    with fast.client(key) as http:
        assert http.post("/v1/numbers", json={"phone_number": CALLER}).status_code == 200
    client = BlandAI(base_url=fast.base_url, api_key=key)
    yield client, key
    close(client)


def test_sdk_sends_lists_and_reads_a_batch(account: tuple[BlandAI, str]) -> None:
    client, _key = account
    sent = client.batches.send(
        base_prompt="Call {{business}} about {service}.",
        call_data=[
            BatchCallData(phone_number="+12125550101", business="Acme", service="Backups"),
            BatchCallData(
                phone_number="(212) 555-0161", business="Bolt", service="Payroll", customer_id=7
            ),
        ],
        # The SDK makes these required; callers pass something, often None.
        phone_number="+12125550199",
        task="ignored in a batch",
        temperature=None,
        tools=None,
        interruption_threshold=None,
        label="sdk batch",
        campaign_id="sdk",
        transfer_list={"default": "+12125550120"},
        model="enhanced",
        pronunciation_guide=[
            PronunciationObject(
                word="Acme", pronunciation="Ack-me", case_insensitive=True, spaced=True
            )
        ],
        transfer_phone_number="+12125550120",
        answered_by_enabled=True,
        from_=CALLER,
        reduce_latency=True,
        voice_id=3,
        voice_preset_id="preset-1",
        wait_for_greeting=False,
        first_sentence="Hello {{business}}",
        record=False,
        voice_settings=True,
        language="en-US",
        max_duration=5,
        voicemail_action="hangup",
        amd=True,
        request_data={"company": "Acme Ltd"},
        dynamic_data=[
            DynamicData(
                url="https://example.com/info",
                response_data=[ResponseData(name="info", data="$.info", context="Info: {{info}}")],
            )
        ],
        request_options={"additional_body_parameters": {"calling_window": OPEN}},
    )
    assert sent.message == "success"
    batch_id = sent.batch_id
    assert batch_id

    listed = client.batches.list()
    assert listed.status == "success"
    [batch] = [b for b in listed.batches if b.batch_id == batch_id]
    assert (batch.label, batch.campaign_id, batch.endpoint_code) == ("sdk batch", "sdk", "api")
    assert batch.base_prompt == "Call {{business}} about {service}."
    assert isinstance(batch.created_at, dt.datetime)
    params = batch.call_params
    assert (params.voice_id, params.reduce_latency, params.max_duration) == (3, True, 5)
    assert (params.language, params.wait_for_greeting) == ("en-US", False)

    def finished() -> Any:
        got = client.batches.details(batch_id)
        return got if got.analysis.completed_calls == 2 else None

    details = wait_for(finished)
    assert details.batch_params.id == batch_id
    assert details.batch_params.label == "sdk batch"
    analysis = details.analysis
    assert (analysis.total_calls, analysis.in_progress_calls) == (2, 0)
    assert sorted(analysis.call_ids) == sorted(c.call_id for c in details.call_data)
    assert analysis.error_messages == ["SIP 486 Busy Here"]
    by_to = {c.to: c for c in details.call_data}
    assert set(by_to) == {"+12125550101", "+12125550161"}
    assert all(c.from_ == CALLER and c.completed for c in details.call_data)
    assert by_to["+12125550101"].answered_by == "human"
    assert isinstance(by_to["+12125550101"].call_length, int)

    light = client.batches.details(batch_id, include_calls=False, include_transcripts=False)
    assert light.call_data == []
    assert light.analysis.total_calls == 2

    calls = client.calls.list(to_number="+12125550101", from_number=CALLER, limit=5, ascending=True)
    assert calls.count == 1
    [listed_call] = calls.calls
    assert (listed_call.to, listed_call.from_, listed_call.batch_id) == (
        "+12125550101",
        CALLER,
        batch_id,
    )
    assert (listed_call.completed, listed_call.queue_status, listed_call.answered_by) == (
        True,
        "complete",
        "human",
    )
    assert isinstance(listed_call.created_at, dt.datetime)
    page = client.calls.list(from_=1, to=2, ascending=True)
    assert (page.count, len(page.calls)) == (2, 1)

    call = client.calls.details(listed_call.call_id)
    assert (call.to, call.from_, call.batch_id, call.error_message) == (
        "+12125550101",
        CALLER,
        batch_id,
        "",
    )
    assert call.completed is True
    assert call.request_data == {
        "company": "Acme Ltd",
        "phone_number": "+12125550101",
        "business": "Acme",
        "service": "Backups",
    }
    assert call.variables["business"] == "Acme"
    assert call.max_duration == 5.0
    assert all(t.c_id == listed_call.call_id for t in call.transcripts)
    busy = client.calls.details(by_to["+12125550161"].call_id)
    assert busy.request_data["customer_id"] == "7"
    assert busy.error_message == "SIP 486 Busy Here"


def test_sdk_stops_a_batch_and_a_call(account: tuple[BlandAI, str]) -> None:
    client, _key = account
    sent = client.batches.send(
        base_prompt="Hi",
        call_data=[
            BatchCallData(phone_number="+12125550101"),
            BatchCallData(phone_number="+12125550102"),
        ],
        phone_number="+12125550199",
        task="",
        temperature=None,
        tools=None,
        interruption_threshold=None,
        start_time=LATER,
    )
    stopped = client.batches.stop(sent.batch_id)
    assert (stopped.status, stopped.num_calls, stopped.batch_id) == ("success", 2, sent.batch_id)
    details = client.batches.details(sent.batch_id)
    assert [c.completed for c in details.call_data] == [True, True]

    queued = client.call(
        phone_number="+12125550103",
        task="Remind {{name}}",
        temperature=0.5,
        tools=[
            CustomTool(name="lookup", description="Look it up", input_schema={}, response_data=[])
        ],
        interruption_threshold=200,
        request_data={"name": "Ada", "visits": 3},
        start_time=LATER,
        from_=CALLER,
    )
    assert (queued.status, queued.message, queued.batch_id) == (
        "success",
        "Call successfully queued.",
        None,
    )
    assert queued.call_id
    before = client.calls.details(queued.call_id)
    assert (before.batch_id, before.completed, before.queue_status) == ("", False, "queued")
    assert before.request_data == {"name": "Ada", "visits": "3", "phone_number": "+12125550103"}

    ended = client.calls.stop(queued.call_id)
    assert (ended.status, ended.message) == ("success", "Call ended successfully.")
    after = client.calls.details(queued.call_id)
    assert after.completed is True
    assert after.error_message == "Cancelled: the call was stopped."


def test_sdk_errors_are_the_sdks_exceptions(fast: Server, account: tuple[BlandAI, str]) -> None:
    client, _key = account
    stranger = BlandAI(base_url=fast.base_url, api_key="cf_not-a-key")
    with pytest.raises(UnauthorizedError) as unauthorized:
        stranger.batches.list()
    close(stranger)
    assert unauthorized.value.status_code == 401
    assert unauthorized.value.body.status == "error"
    assert "API key" in unauthorized.value.body.message

    with pytest.raises(ApiError) as missing:
        client.batches.details("5b0c0b5e-0000-4000-8000-000000000000")
    assert missing.value.status_code == 404
    assert missing.value.body["status"] == "error"

    with pytest.raises(ApiError) as bad:
        client.batches.send(
            base_prompt="Hi",
            call_data=[BatchCallData(phone_number="1234567890")],
            phone_number="+12125550199",
            task="t",
            temperature=None,
            tools=None,
            interruption_threshold=None,
        )
    assert bad.value.status_code == 400
    assert [e["field"] for e in bad.value.body["errors"]] == ["call_data[0].phone_number"]

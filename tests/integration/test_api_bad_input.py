"""Bad input to the API: every 4xx is the error envelope, names the exact field, creates nothing.

Runs against a real server on SQLite and on PostgreSQL. Several cases share one server so
that the whole file stays fast; each case says which one failed.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from callfleet.api.call_fields import CALL_FIELDS
from conftest import Server

GOOD = {"phone_number": "+12125550101", "name": "Ada"}
GOOD2 = {"phone_number": "+12125550102", "name": "Bob"}
OPEN = {"start": "00:00", "end": "24:00"}


@pytest.fixture
def fast(server_factory: Any) -> Server:
    """A server whose calls-per-second pacing does not slow the tests down."""
    srv: Server = server_factory(default_cps=1000)
    return srv


def assert_error(
    resp: httpx.Response, status: int, fields: list[str], case: str = ""
) -> dict[str, Any]:
    """The response is `status` in the error envelope, naming exactly `fields`, in order."""
    where = f"[{case}] " if case else ""
    assert resp.status_code == status, f"{where}{resp.status_code}: {resp.text}"
    body = resp.json()
    assert body["status"] == "error", where + resp.text
    assert isinstance(body["message"], str) and body["message"].strip(), where + resp.text
    assert [e["field"] for e in body["errors"]] == fields, where + resp.text
    for err in body["errors"]:
        assert set(err) == {"field", "message"}, where + resp.text
        assert isinstance(err["message"], str) and err["message"].strip(), where + resp.text
    return body


def assert_nothing_created(client: httpx.Client) -> None:
    batches = client.get("/v1/batches")
    assert batches.status_code == 200
    assert batches.json()["batches"] == []
    calls = client.get("/v1/calls").json()
    assert (calls["count"], calls["calls"]) == (0, [])


# --- the whole request is rejected ------------------------------------------------------

SHAPE_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("no base_prompt", {"call_data": [GOOD]}, ["base_prompt"]),
    ("base_prompt not a string", {"base_prompt": 5, "call_data": [GOOD]}, ["base_prompt"]),
    ("base_prompt blank", {"base_prompt": "  ", "call_data": [GOOD]}, ["base_prompt"]),
    ("no call_data", {"base_prompt": "Hi"}, ["call_data"]),
    ("call_data an object", {"base_prompt": "Hi", "call_data": GOOD}, ["call_data"]),
    ("call_data a string", {"base_prompt": "Hi", "call_data": "+12125550101"}, ["call_data"]),
    ("call_data empty", {"base_prompt": "Hi", "call_data": []}, ["call_data"]),
    (
        "rows that are not objects",
        {"base_prompt": "Hi", "call_data": [GOOD, "+12125550103", 5, None, [GOOD2]]},
        ["call_data[1]", "call_data[2]", "call_data[3]", "call_data[4]"],
    ),
    (
        "rows without phone_number",
        {
            "base_prompt": "Hi",
            "call_data": [GOOD, {"name": "x"}, GOOD2, {"phone_number": None}, {"phone_number": ""}],
        },
        ["call_data[1].phone_number", "call_data[3].phone_number", "call_data[4].phone_number"],
    ),
    (
        "several problems at once",
        {"call_data": [GOOD, 7, {"name": "x"}]},
        ["base_prompt", "call_data[1]", "call_data[2].phone_number"],
    ),
]


def test_a_body_of_the_wrong_shape_is_rejected_whole(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        for case, body, fields in SHAPE_CASES:
            answer = assert_error(client.post("/v1/batches", json=body), 400, fields, case)
            assert fields[0] in answer["message"], case
        assert_nothing_created(client)


def test_the_seeds_example_numbers_are_rejected_row_by_row(fast: Server) -> None:
    seed_rows = [{"phone_number": "1234567890"}, {"phone_number": "32176540987"}]
    with fast.client(fast.new_key()) as client:
        body = assert_error(
            client.post("/v1/batches", json={"base_prompt": "Hi", "call_data": seed_rows}),
            400,
            ["call_data[0].phone_number", "call_data[1].phone_number"],
        )
        first, second = (e["message"] for e in body["errors"])
        assert "'1234567890'" in first and "area code 123" in first
        assert "'32176540987'" in second and "too long" in second
        assert_nothing_created(client)

        mixed = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [seed_rows[0], GOOD, seed_rows[1]],
                "calling_window": OPEN,
            },
        )
        assert mixed.status_code == 200, mixed.text
        sent = mixed.json()
        assert (sent["status"], sent["message"], sent["call_count"]) == ("success", "success", 1)
        assert [(r["index"], r["phone_number"]) for r in sent["rejected"]] == [
            (0, "1234567890"),
            (2, "32176540987"),
        ]
        assert [[e["field"] for e in r["errors"]] for r in sent["rejected"]] == [
            ["call_data[0].phone_number"],
            ["call_data[2].phone_number"],
        ]
        details = client.get(f"/v1/batches/{sent['batch_id']}").json()
        assert [c["to"] for c in details["call_data"]] == ["+12125550101"]


def test_a_row_missing_a_placeholder_is_rejected_naming_it(fast: Server) -> None:
    prompt = "Call {{business}} about {service}."
    rows = [
        {"phone_number": "+12125550101", "business": "Acme", "service": "Backups"},
        {"phone_number": "+12125550102", "business": "Acme"},
        {"phone_number": "+12125550103"},
        {"phone_number": "+12125550104", "Business": "case matters", "service": "x"},
    ]
    with fast.client(fast.new_key()) as client:
        resp = client.post(
            "/v1/batches", json={"base_prompt": prompt, "call_data": rows, "calling_window": OPEN}
        )
        assert resp.status_code == 200, resp.text
        sent = resp.json()
        assert sent["call_count"] == 1
        rejected = {r["index"]: r["errors"] for r in sent["rejected"]}
        assert sorted(rejected) == [1, 2, 3]
        assert [e["field"] for e in rejected[1]] == ["call_data[1]"]
        assert "service" in rejected[1][0]["message"]
        assert "business" not in rejected[1][0]["message"]
        assert "business" in rejected[2][0]["message"] and "service" in rejected[2][0]["message"]
        assert "business" in rejected[3][0]["message"]

        # A placeholder in first_sentence is checked the same way; no row fits: 400.
        only_bad = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "first_sentence": "Hello {{first_name}}",
                "call_data": [GOOD, GOOD2],
            },
        )
        body = assert_error(only_bad, 400, ["call_data[0]", "call_data[1]"])
        assert all("first_name" in e["message"] for e in body["errors"])
        assert len(client.get("/v1/batches").json()["batches"]) == 1


def test_a_number_twice_in_one_batch_is_dialled_once(fast: Server) -> None:
    rows = [
        {"phone_number": "+12125550101"},
        {"phone_number": "(212) 555-0101"},
        {"phone_number": "212.555.0101"},
        {"phone_number": "+12125550102"},
    ]
    with fast.client(fast.new_key()) as client:
        resp = client.post(
            "/v1/batches", json={"base_prompt": "Hi", "call_data": rows, "calling_window": OPEN}
        )
        assert resp.status_code == 200, resp.text
        sent = resp.json()
        assert sent["call_count"] == 2
        assert [r["index"] for r in sent["rejected"]] == [1, 2]
        for row in sent["rejected"]:
            [err] = row["errors"]
            assert err["field"] == f"call_data[{row['index']}].phone_number"
            assert "+12125550101" in err["message"] and "call_data[0]" in err["message"]
        details = client.get(f"/v1/batches/{sent['batch_id']}").json()
        assert sorted(c["to"] for c in details["call_data"]) == ["+12125550101", "+12125550102"]


def test_from_must_be_one_of_the_accounts_numbers(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        body = assert_error(
            client.post(
                "/v1/batches",
                json={"base_prompt": "Hi", "call_data": [GOOD], "from": "+12125550150"},
            ),
            400,
            ["from"],
        )
        assert "+12125550150" in body["message"] and "/v1/numbers" in body["message"]
        assert_nothing_created(client)
        # In a row, an unowned `from` rejects only that row.
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [GOOD, {**GOOD2, "from": "+12125550150"}],
                "calling_window": OPEN,
            },
        )
        assert resp.status_code == 200, resp.text
        [row] = resp.json()["rejected"]
        assert row["index"] == 1
        assert [e["field"] for e in row["errors"]] == ["call_data[1].from"]


TYPED_CASES: list[tuple[str, Any, list[str]]] = [
    ("start_time", "next tuesday-ish", ["start_time"]),
    ("start_time", 1767225600, ["start_time"]),
    ("start_time", "9999-12-31 23:59:59 -05:00", ["start_time"]),
    ("record", "yes", ["record"]),
    ("max_duration", "ten", ["max_duration"]),
    ("max_duration", 0, ["max_duration"]),
    ("max_duration", True, ["max_duration"]),
    ("temperature", 2, ["temperature"]),
    ("voicemail_action", "shout", ["voicemail_action"]),
    ("test_mode", "true", ["test_mode"]),
    ("wait_for_greeting", 1, ["wait_for_greeting"]),
    ("calling_window", {"start": "20:00", "end": "09:00"}, ["calling_window.start"]),
    (
        "calling_window",
        {"start": "09:00", "end": "20:00", "days": ["funday"]},
        ["calling_window.days[0]"],
    ),
    ("calling_window", "9 to 5", ["calling_window"]),
    ("timezone", "Mars/Olympus_Mons", ["timezone"]),
    ("timezone", "9" * 400, ["timezone"]),
    ("webhook", "ftp://example.com/hook", ["webhook"]),
    ("batch_webhook", "not a url", ["batch_webhook"]),
    ("label", 5, ["label"]),
    ("label", "x" * 501, ["label"]),
    ("campaign_id", "c" * 201, ["campaign_id"]),
    ("retry", {"max_attempts": 99}, ["retry.max_attempts"]),
    ("metadata", "not an object", ["metadata"]),
    ("keywords", "one, two", ["keywords"]),
    (
        "pronunciation_guide",
        [{"word": ""}],
        ["pronunciation_guide[0].word", "pronunciation_guide[0].pronunciation"],
    ),
    ("transfer_phone_number", "12", ["transfer_phone_number"]),
    ("voice_id", 1.5, ["voice_id"]),
    ("dispositions", ["ok", 1], ["dispositions[1]"]),
]


def test_typed_fields_are_checked_strictly(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        for name, value, fields in TYPED_CASES:
            case = f"{name}={value!r}"[:60]
            body = {"base_prompt": "Hi", "call_data": [GOOD], name: value}
            assert_error(client.post("/v1/batches", json=body), 400, fields, case)
        assert_nothing_created(client)

        # The same checks inside a row reject only that row.
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "calling_window": OPEN,
                "call_data": [
                    GOOD,
                    {"phone_number": "+12125550102", "record": "yes"},
                    {"phone_number": "+12125550103", "max_duration": "ten"},
                    {"phone_number": "+12125550104", "start_time": "soon"},
                ],
            },
        )
        assert resp.status_code == 200, resp.text
        sent = resp.json()
        assert sent["call_count"] == 1
        assert [[e["field"] for e in r["errors"]] for r in sent["rejected"]] == [
            ["call_data[1].record"],
            ["call_data[2].max_duration"],
            ["call_data[3].start_time"],
        ]


def test_voice_id_message_names_both_accepted_types(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        body = assert_error(
            client.post(
                "/v1/batches", json={"base_prompt": "Hi", "call_data": [GOOD], "voice_id": 1.5}
            ),
            400,
            ["voice_id"],
        )
    assert body["errors"][0]["message"] == "Must be a string or an integer (got 1.5)."


def test_a_batch_over_the_row_limit_is_413_naming_the_limit(server_factory: Any) -> None:
    srv: Server = server_factory(max_batch_rows=5, default_cps=1000)
    rows = [{"phone_number": f"+1212555010{i}"} for i in range(6)]
    with srv.client(srv.new_key()) as client:
        body = assert_error(
            client.post("/v1/batches", json={"base_prompt": "Hi", "call_data": rows}),
            413,
            ["call_data"],
        )
        assert "at most 5 calls" in body["message"] and "6" in body["message"]
        assert_nothing_created(client)
        ok = client.post(
            "/v1/batches",
            json={"base_prompt": "Hi", "call_data": rows[:5], "calling_window": OPEN},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["call_count"] == 5


def test_bodies_that_are_not_a_json_object(fast: Server) -> None:
    deep: Any = "x"
    for _ in range(80):
        deep = [deep]
    raw_cases: list[tuple[str, bytes, list[str]]] = [
        ("not JSON", b'{"base_prompt": "Hi", call_data: []}', ["body"]),
        ("truncated", b'{"base_prompt": "Hi", "call_data": [', ["body"]),
        ("empty", b"", ["body"]),
        ("an array", json.dumps([{"base_prompt": "Hi", "call_data": [GOOD]}]).encode(), ["body"]),
        ("a string", b'"hello"', ["body"]),
        ("null", b"null", ["body"]),
        (
            "NaN",
            b'{"base_prompt": "Hi", "call_data": [{"phone_number": "+12125550101", "n": NaN}]}',
            ["body"],
        ),
        (
            "Infinity",
            b'{"base_prompt": "Hi", "call_data": [{"phone_number": "+12125550101"}], '
            b'"temperature": Infinity}',
            ["body"],
        ),
        (
            "nested past the JSON parser",
            b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            ["body"],
        ),
        (
            "nested too deep",
            json.dumps({"base_prompt": "Hi", "call_data": [GOOD], "x": deep}).encode(),
            ["x" + "[0]" * 64],
        ),
        (
            "a NUL in a row",
            json.dumps(
                {
                    "base_prompt": "Hi",
                    "call_data": [GOOD, {"phone_number": "+12125550102", "note": "a\u0000b"}],
                }
            ).encode(),
            ["call_data[1].note"],
        ),
        (
            "a NUL in the prompt",
            json.dumps({"base_prompt": "Hi\u0000", "call_data": [GOOD]}).encode(),
            ["base_prompt"],
        ),
    ]
    with fast.client(fast.new_key()) as client:
        for case, raw, fields in raw_cases:
            for path in ("/v1/batches", "/v1/calls"):
                resp = client.post(path, content=raw, headers={"content-type": "application/json"})
                assert_error(resp, 400, fields, f"{case} {path}")
        assert_nothing_created(client)


def test_nul_characters_in_urls_are_refused(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        for method, path in [
            ("GET", "/v1/batches/%00"),
            ("GET", "/v1/calls/a%00b"),
            ("POST", "/v1/batches/%00/stop"),
            ("GET", "/v1/calls?to_number=%00"),
            ("GET", "/v1/batches?campaign_id=x%00"),
        ]:
            assert_error(client.request(method, path), 400, [], f"{method} {path}")


def test_query_parameters_out_of_range_are_400(fast: Server) -> None:
    with fast.client(fast.new_key()) as client:
        for path, field in [
            ("/v1/calls?limit=0", "query.limit"),
            ("/v1/calls?completed=maybe", "query.completed"),
            ("/v1/calls?start_date=yesterday", "query.start_date"),
            ("/v1/calls?start_date=9999-12-31T23:59:59-23:00", "query.start_date"),
            ("/v1/calls?end_date=0001-01-01T00:00:00%2B05:00", "query.end_date"),
            ("/v1/calls?from=99999999999999999999", "query.from"),
            ("/v1/batches?to=99999999999999999999", "query.to"),
            ("/v1/batches?limit=-1", "query.limit"),
        ]:
            assert_error(client.get(path), 400, [field], path)
        assert client.get("/v1/dnc?offset=99999999999999999999").status_code == 200


def test_unknown_batch_and_call_ids_are_404_with_a_message(fast: Server) -> None:
    missing = "5b0c0b5e-0000-4000-8000-000000000000"
    questions = {"goal": "g", "questions": [["Who answered?", "string"]]}
    with fast.client(fast.new_key()) as client:
        for method, path, body in [
            ("GET", f"/v1/batches/{missing}", None),
            ("POST", f"/v1/batches/{missing}/stop", None),
            ("POST", f"/v1/batches/{missing}/analyze", questions),
            ("GET", f"/v1/batches/{missing}/analysis", None),
            ("GET", f"/v1/calls/{missing}", None),
            ("POST", f"/v1/calls/{missing}/stop", None),
            ("POST", f"/v1/calls/{missing}/analyze", questions),
            ("GET", f"/v1/calls/{missing}/recording", None),
            ("GET", f"/v1/webhooks/deliveries/{missing}", None),
        ]:
            resp = client.request(method, path, json=body)
            answer = assert_error(resp, 404, [], f"{method} {path}")
            assert missing in answer["message"], f"{method} {path}: {answer}"
        assert_error(client.get("/v1/nowhere"), 404, [], "unknown route")


def test_the_api_key_is_required_and_checked(fast: Server) -> None:
    key = fast.new_key()
    body = {"base_prompt": "Hi", "call_data": [GOOD]}
    with fast.client() as anonymous:
        for method, path in [
            ("GET", "/v1/batches"),
            ("POST", "/v1/batches"),
            ("GET", "/v1/calls"),
            ("POST", "/v1/calls/x/stop"),
        ]:
            answer = assert_error(
                anonymous.request(method, path, json=body if method == "POST" else None),
                401,
                [],
                f"no key {method} {path}",
            )
            assert "authorization" in answer["message"]
            for wrong in ("cf_not-a-real-key", f"Bearer {key}x", "", "Bearer"):
                resp = anonymous.request(method, path, headers={"authorization": wrong})
                assert_error(resp, 401, [], f"key {wrong!r} {method} {path}")
        for header in (key, f"Bearer {key}", f"bearer {key}", f"Bearer  {key}"):
            resp = anonymous.get("/v1/batches", headers={"authorization": header})
            assert resp.status_code == 200, (header, resp.text)
    with fast.client(key) as client:
        assert_nothing_created(client)


# --- no input yields a 500 ----------------------------------------------------------------

# Each of these has found a 500 in some field on one of the databases.
ODD_VALUES: list[Any] = [
    True,
    -1,
    "x\u0000y",
    "9" * 3000,
    [[[]]],
    {"a": {"b": [1]}},
    "0001-01-01 00:00:00 +05:00",
]


def test_odd_values_in_every_field_never_yield_a_500(fast: Server) -> None:
    names = sorted(CALL_FIELDS | {"label", "campaign_id", "test_mode", "batch_webhook"})
    failures: list[str] = []
    with fast.client(fast.new_key()) as client:
        for name in names:
            for value in ODD_VALUES:
                attempts = [
                    ("/v1/batches", {"base_prompt": "Hi", "call_data": [GOOD], name: value}),
                    ("/v1/batches", {"base_prompt": "Hi", "call_data": [{**GOOD2, name: value}]}),
                ]
                for path, body in attempts:
                    resp = client.post(path, json=body)
                    answer = resp.json()
                    if resp.status_code >= 500 or answer.get("status") not in ("success", "error"):
                        failures.append(f"{path} {name}={value!r:.40}: {resp.status_code}")
                    elif resp.status_code >= 400 and not (
                        answer["status"] == "error" and answer["message"] and "errors" in answer
                    ):
                        failures.append(f"{path} {name}={value!r:.40}: no envelope {answer}")
    assert failures == []

"""The dashboard's pages in-process (no browser): sign-in, CSRF, errors, the live JSON."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from callfleet.clock import utcnow
from callfleet.config import Settings
from callfleet.store.accounts import create_account, create_key
from callfleet.store.db import Database
from callfleet.store.migrate import migrate
from callfleet.store.numbers import add_number, pause_number
from callfleet.store.tables import api_keys
from callfleet.wiring import create_app


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    settings = Settings(
        data_dir=tmp_path,
        carrier="simulator-nomedia",
        secret_key="dashboard-test-secret-" + "k" * 20,
    )
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    with db.write() as conn:
        key = create_key(conn, create_account(conn, "t").id, "t")
    with TestClient(create_app(settings, db=db, dispatch=False), follow_redirects=False) as tc:
        yield tc, key
    db.dispose()


def sign_in(tc: TestClient, key: str) -> str:
    """Signs in; returns the session's CSRF token."""
    token = re.search(r'name="signin_token" value="([^"]+)"', tc.get("/sign-in").text)
    assert token
    done = tc.post("/sign-in", data={"api_key": key, "signin_token": token.group(1)})
    assert done.status_code == 303 and done.headers["location"] == "/batches"
    cookie = done.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and key not in cookie
    csrf = re.search(r'name="csrf" value="([^"]+)"', tc.get("/batches").text)
    assert csrf
    return csrf.group(1)


def test_pages_need_a_session(setup: tuple[TestClient, str]) -> None:
    tc, _ = setup
    for path in ("/", "/batches", "/batches/new", "/dnc", "/numbers", "/calls/x"):
        got = tc.get(path)
        assert got.status_code == 303 and got.headers["location"].startswith("/sign-in"), path
    assert tc.get("/batches/x/live").status_code == 401


def test_sign_in_needs_the_form_token_and_a_real_key(setup: tuple[TestClient, str]) -> None:
    tc, key = setup
    assert tc.post("/sign-in", data={"api_key": key}).status_code == 403  # cross-site
    token = re.search(r'name="signin_token" value="([^"]+)"', tc.get("/sign-in").text)
    assert token
    wrong = tc.post("/sign-in", data={"api_key": "cf_nope", "signin_token": token.group(1)})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text


def test_posts_without_the_csrf_token_are_refused(setup: tuple[TestClient, str]) -> None:
    tc, key = setup
    csrf = sign_in(tc, key)
    for path in ("/dnc", "/dnc/remove", "/batches/new", "/batches/x/stop", "/sign-out"):
        assert tc.post(path, data={"phone_number": "+14155550123"}).status_code == 403, path
    added = tc.post("/dnc", data={"phone_number": "+14155550123", "csrf": csrf})
    assert added.status_code == 303
    assert "+14155550123" in tc.get("/dnc").text


def test_a_batch_sent_from_the_form_and_read_back(setup: tuple[TestClient, str]) -> None:
    tc, key = setup
    csrf = sign_in(tc, key)
    form = {
        "csrf": csrf,
        "base_prompt": "Hi {{name}}",
        "rows": "number;name\n+12125550101;Ada\n\n12;Bad\n",
        "label": "Form batch",
        "action": "send",
    }
    sent = tc.post("/batches/new", data=form)
    assert sent.status_code == 303, sent.text
    batch_url = sent.headers["location"]
    page = tc.get(batch_url)
    assert "<h1>Form batch</h1>" in page.text and 'aria-label="Progress"' in page.text
    live = tc.get(batch_url + "/live").json()
    assert live["total"] == 1 and live["calls"][0]["status"] == "queued"
    missing = tc.post("/batches/new", data={**form, "rows": "name\nAda\n"})
    assert missing.status_code == 400 and "No phone column" in missing.text
    preview = tc.post("/batches/new", data={**form, "action": "preview"})
    assert preview.status_code == 200 and "Hi Ada" in preview.text
    assert "CSV line" in preview.text and ">4<" in preview.text  # the bad row's line


def test_an_unknown_batch_is_a_404_page(setup: tuple[TestClient, str]) -> None:
    tc, key = setup
    sign_in(tc, key)
    got = tc.get("/batches/nope")
    assert got.status_code == 404 and "Not found" in got.text


def test_the_session_cookie_is_secure_over_https(setup: tuple[TestClient, str]) -> None:
    tc, key = setup
    tc.base_url = tc.base_url.copy_with(scheme="https")
    token = re.search(r'name="signin_token" value="([^"]+)"', tc.get("/sign-in").text)
    assert token
    done = tc.post("/sign-in", data={"api_key": key, "signin_token": token.group(1)})
    assert done.status_code == 303 and "Secure" in done.headers["set-cookie"]


def test_preview_calls_nobody_and_rehearse_opens_a_rehearsal(
    setup: tuple[TestClient, str],
) -> None:
    tc, key = setup
    csrf = sign_in(tc, key)
    api = {"authorization": key}
    form = {
        "csrf": csrf,
        "base_prompt": "Hi {{name}}, about {{ topic }}.",
        "rows": "phone;name;topic\n+14155551001;Ada;rates\n+14155551002;Bob;fees\nnope;Cy;x\n",
        "label": "Rates",
        "action": "preview",
    }
    preview = tc.post("/batches/new", data=form)
    assert preview.status_code == 200, preview.text
    assert "Nobody was called" in preview.text
    assert "Hi Ada, about rates." in preview.text and "Hi Bob, about fees." in preview.text
    assert '<mark class="placeholder">{{name}}</mark>' in preview.text
    assert '<mark class="placeholder">{{topic}}</mark>' in preview.text
    assert ">4<" in preview.text  # the bad row's CSV line
    assert tc.get("/v1/batches", headers=api).json()["batches"] == []
    assert tc.get("/v1/calls", headers=api).json()["count"] == 0

    too_many = tc.post("/batches/new", data={**form, "action": "rehearse", "rehearsal_rows": "25"})
    assert too_many.status_code == 400 and "rehearsal_rows" in too_many.text
    rehearsed = tc.post("/batches/new", data={**form, "action": "rehearse"})
    assert rehearsed.status_code == 303, rehearsed.text
    page = tc.get(rehearsed.headers["location"])
    assert 'class="tag rehearsal"' in page.text and "Stood in for" in page.text
    assert "row 1 (+14155551001) as person" in page.text
    assert "Append rows" not in page.text
    listed = tc.get("/batches")
    assert 'class="tag rehearsal">rehearsal</span>' in listed.text
    numbers = {c["to"] for c in tc.get("/v1/calls", headers=api).json()["calls"]}
    assert numbers == {"+12125550100", "+12125550130"}


def test_do_not_call_csv_upload_reports_bad_lines(setup: tuple[TestClient, str]) -> None:
    tc, key = setup
    csrf = sign_in(tc, key)
    csv_file = ("dnc.csv", b"number\n+12125550171\nbad\n+12125550172\n", "text/csv")
    done = tc.post(
        "/dnc/upload", data={"csrf": csrf, "reason": "asked"}, files={"dnc_file": csv_file}
    )
    assert done.status_code == 303
    page = tc.get(done.headers["location"])
    assert "2 numbers added" in page.text and "CSV line 3" in page.text
    assert "+12125550171" in page.text and "+12125550172" in page.text
    refused = tc.post("/dnc/upload", files={"dnc_file": csv_file})
    assert refused.status_code == 403  # no CSRF token


def test_export_csv_streams_the_apis_bytes(setup: tuple[TestClient, str]) -> None:
    tc, key = setup
    csrf = sign_in(tc, key)
    rows = "phone_number,name\n" + "".join(f"+1415555{n:04d},P{n}\n" for n in range(2000, 2400))
    sent = tc.post(
        "/batches/new",
        data={"csrf": csrf, "base_prompt": "Hi {{name}}", "rows": rows, "action": "send"},
    )
    assert sent.status_code == 303, sent.text
    batch_id = sent.headers["location"].rsplit("/", 1)[1]
    direct = tc.get(
        f"/v1/batches/{batch_id}/export", params={"format": "csv"}, headers={"authorization": key}
    )
    through = tc.get(f"/batches/{batch_id}/export.csv")
    assert through.status_code == 200 and through.content == direct.content
    assert through.content.count(b"\n") == 401
    assert through.headers["content-disposition"] == f'attachment; filename="batch-{batch_id}.csv"'
    assert tc.get("/batches/nope/export.csv").status_code == 404


def test_numbers_show_health_and_a_paused_one_can_be_resumed(
    setup: tuple[TestClient, str],
) -> None:
    tc, key = setup
    csrf = sign_in(tc, key)
    db: Database = tc.app.state.runtime.db  # type: ignore[attr-defined]
    with db.write() as conn:
        account_id = conn.execute(sa.select(api_keys.c.account_id)).scalar_one()
        add_number(conn, account_id, "+14155550100", "sales line", None, None, utcnow())
        pause_number(conn, account_id, "+14155550100", "answer rate 4 % over 50 attempts", utcnow())
    page = tc.get("/numbers").text
    # The page as a whole: its trunks and its caller IDs, each section once.
    assert page.count("<h2>Trunks</h2>") == 1 and page.count("<h2>Caller IDs</h2>") == 1
    assert len(page) < 20_000, len(page)
    assert "+14155550100" in page and "health-paused" in page
    assert "answer rate 4 % over 50 attempts" in page
    assert 'aria-label="Resume +14155550100"' in page
    assert tc.post("/numbers/resume", data={"phone_number": "+14155550100"}).status_code == 403
    done = tc.post("/numbers/resume", data={"csrf": csrf, "phone_number": "+14155550100"})
    assert done.status_code == 303 and "in+use+again" in done.headers["location"]
    page = tc.get(done.headers["location"]).text
    assert "health-healthy" in page and "Resume +14155550100" not in page
    assert "is in use again" in page

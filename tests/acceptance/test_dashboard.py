"""The dashboard in a real browser: Playwright driving Debian's Chromium against the
real `callfleet serve` (a subprocess) and its built-in phone simulator.

Never `playwright install`: the browser is the `chromium` Debian package, which
`.ci/run` installs. Without /usr/bin/chromium these tests fail; they never skip.
Set CALLFLEET_DASHBOARD_SCREENSHOTS to a directory (e.g. `docs`) to keep the
README's screenshots of the batch page and the call page.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from tests.acceptance.test_cli import callfleet_command, run
from tests.conftest import free_port

# `browser`: run in a pytest process of their own (see the Makefile), after the rest, so
# the browser and the agent-on server they start cannot share a process with the
# real-time agent tests.
pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
ROWS = "phone_number,name\n+12125550101,Ada\n+12125550160,Bo\n+12125550180,Cy\n+12125550190,Di\n"


@dataclass
class Served:
    base_url: str
    key: str
    data_dir: Path
    log: Path


def _serve(
    data_dir: Path, *, agent: bool, time_scale: float = 0.05, **extra: str
) -> Iterator[Served]:
    """`callfleet serve` in its own data directory, with a key made before it starts."""
    data_dir.mkdir(parents=True, exist_ok=True)
    made = run(["keys", "create", "--name", "dash"], data_dir, timeout=120)
    assert made.returncode == 0, made.stderr
    key = made.stdout.rstrip("\n").split("\n")[-1]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLEET_")}
    env.update(
        {
            "CALLFLEET_DATA_DIR": str(data_dir),
            "CALLFLEET_SIMULATOR_TIME_SCALE": str(time_scale),
            "CALLFLEET_RING_TIMEOUT_S": str(max(5.0, 30.0 * time_scale)),  # as the demo
            "CALLFLEET_AGENT_ENABLED": "true" if agent else "false",
            "CALLFLEET_LOG_LEVEL": "warning",
            "NO_COLOR": "1",
            **extra,
        }
    )
    log = data_dir / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [callfleet_command(), "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "callfleet serve did not start"
            time.sleep(0.2)
        yield Served(base, key, data_dir, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve(tmp_path_factory.mktemp("dash"), agent=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's `chromium` package (.ci/run does); "
            "the dashboard's browser tests never download a browser"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: object, server: Served) -> Iterator[object]:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    context = browser.new_context(base_url=server.base_url, viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    try:
        yield tab
    finally:
        context.close()


def sign_in(page: object, key: str) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/batches$"))


def closed_window() -> tuple[str, str]:
    """A one-minute calling window at least an hour away in New York (the callees'
    zone), so the batch's calls wait and stay stoppable. It lies inside the default
    operator hours (08:00-21:00), which the server refuses a window outside of, so
    the test passes at any hour of the day."""
    now = datetime.now(ZoneInfo("America/New_York"))
    minute = now.hour * 60 + now.minute
    start = 20 * 60 if 7 * 60 <= minute < 9 * 60 else 8 * 60
    return f"{start // 60:02d}:00", f"{start // 60:02d}:01"


def test_a_wrong_key_is_refused_on_the_sign_in_page(page: object) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    page.goto("/batches")
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    page.get_by_label("API key").fill("cf_not_a_key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked")


def test_preview_send_and_watch_the_batch_finish(page: object, server: Served) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    sign_in(page, server.key)
    page.get_by_role("link", name="New batch").first.click()
    page.get_by_label("Prompt").fill("You are calling {{name}} about their order.")
    page.get_by_label("Rows").fill(ROWS + "12345,Bad\n")
    page.get_by_label("Label").fill("Dashboard run")
    page.get_by_label("Calling window start").fill("00:00")
    page.get_by_label("Calling window end").fill("24:00")
    page.get_by_role("button", name="Preview").click()
    # The first rows' prompts, rendered; the prompt's placeholder marked; nobody called.
    rendered = page.locator("[data-rendered-prompt]")
    expect(rendered).to_have_count(4)
    expect(rendered.first).to_have_text("You are calling Ada about their order.")
    expect(rendered.nth(3)).to_have_text("You are calling Di about their order.")
    expect(page.locator("[data-prompt-marked] mark")).to_have_text("{{name}}")
    expect(page.get_by_text("Nobody was called and nothing was stored")).to_be_visible()
    expect(page.get_by_text("4 of 5 rows are valid")).to_be_visible()
    expect(page.locator("tr.bad")).to_contain_text("not a valid phone number")
    expect(page.locator("tr.bad td").first).to_have_text("6")  # the bad row's CSV line
    api = {"authorization": server.key}
    calls = httpx.get(
        f"{server.base_url}/v1/calls", params={"to_number": "+12125550101"}, headers=api
    )
    assert calls.json()["count"] == 0, "Preview placed a call"
    # Typing in the prompt lists its placeholders, marked, as they are typed.
    page.get_by_label("Prompt").fill("You are calling {{name}} about {{ order }}.")
    expect(page.locator("[data-placeholders] mark")).to_have_text(["{{name}}", "{{order}}"])
    page.get_by_label("Prompt").fill("You are calling {{name}} about their order.")
    # The form keeps what was typed; drop the bad row and send.
    page.get_by_label("Rows").fill(ROWS)
    page.get_by_role("button", name="Send batch").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard run")
    page.evaluate("window.__noReload = true")
    bar = page.get_by_role("progressbar", name="Progress")
    expect(bar).to_be_visible()
    expect(bar).to_have_attribute("max", "4")
    expect(bar).to_have_js_property("value", 4, timeout=90_000)
    assert page.evaluate("window.__noReload") is True  # live, not reloaded
    expect(page.locator('[data-col="status"]', has_text="busy")).to_have_count(1)
    expect(page.locator("[data-outcome-chart] svg")).to_be_visible()
    # Filters: the busy call alone, then a search by number.
    page.get_by_label("Status").select_option("busy")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.get_by_role("link", name="+12125550160")).to_be_visible()
    page.get_by_label("Status").select_option("")
    page.get_by_label("Number").fill("555-0180")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    page.get_by_role("link", name="+12125550180").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Call to +12125550180")
    expect(page.get_by_text("declined").first).to_be_visible()
    # The batches list shows it with its progress and outcome mix.
    page.get_by_role("link", name="Batches").click()
    row = page.locator("tr", has=page.get_by_role("link", name="Dashboard run", exact=True))
    expect(row.get_by_role("progressbar")).to_have_js_property("value", 4)
    expect(row).to_contain_text("busy 1")


def test_stop_a_second_batch(page: object, server: Served, tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    sign_in(page, server.key)
    page.get_by_role("link", name="New batch").first.click()
    page.get_by_label("Prompt").fill("Hello {{name}}.")
    upload = tmp_path / "people.csv"  # a spreadsheet's export: BOM, semicolons
    upload.write_text("\ufeff" + ROWS.replace(",", ";").replace("phone_number", "Phone"))
    page.get_by_label("CSV file").set_input_files(upload)
    page.get_by_label("Label").fill("To be stopped")
    start, end = closed_window()
    page.get_by_label("Calling window start").fill(start)
    page.get_by_label("Calling window end").fill(end)
    page.get_by_role("button", name="Send batch").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("To be stopped")
    expect(page.locator('[data-field="queued"]')).to_have_text("4")
    dialogs: list[str] = []

    def answer(dialog: object) -> None:
        dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept()  # type: ignore[attr-defined]

    page.once("dialog", answer)
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("status")).to_contain_text("4 calls cancelled")
    assert dialogs and "Stop this batch?" in dialogs[0]
    expect(page.locator('[data-col="status"]', has_text="canceled")).to_have_count(4)


def test_do_not_call_add_and_remove(page: object, server: Served) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    sign_in(page, server.key)
    page.get_by_role("link", name="Do-not-call").click()
    page.get_by_label("Number to add").fill("(415) 555-0123")
    page.get_by_label("Reason", exact=True).fill("asked us not to call")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("status")).to_contain_text("Added")
    expect(page.get_by_role("cell", name="+14155550123", exact=True)).to_be_visible()
    page.get_by_role("searchbox", name="Search").fill("0123")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    page.get_by_role("button", name="Remove +14155550123").click()
    expect(page.get_by_role("status")).to_contain_text("Removed")
    expect(page.get_by_role("cell", name="+14155550123", exact=True)).to_have_count(0)
    page.get_by_role("link", name="Numbers").click()
    expect(page.get_by_role("heading", name="Trunks")).to_be_visible()
    expect(page.get_by_role("heading", name="Caller IDs")).to_be_visible()


def test_upload_a_csv_to_the_do_not_call_list(page: object, server: Served, tmp_path: Path) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    sign_in(page, server.key)
    page.get_by_role("link", name="Do-not-call").click()
    upload = tmp_path / "dnc.csv"
    upload.write_text(
        "\ufeffName;Phone;Reason\nAda;+14155550131;asked\nBo;nope;\nCy;(415) 555-0132;\n"
    )
    page.get_by_label("CSV of numbers").set_input_files(upload)
    page.get_by_label("Reason for the uploaded numbers").fill("complaints list")
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_role("status")).to_contain_text("2 numbers added")
    expect(page.get_by_role("status")).to_contain_text("CSV line 3")
    row = page.locator("tr", has=page.get_by_role("cell", name="+14155550131", exact=True))
    expect(row).to_contain_text("asked")
    row = page.locator("tr", has=page.get_by_role("cell", name="+14155550132", exact=True))
    expect(row).to_contain_text("complaints list")


def test_a_post_without_the_csrf_token_is_refused(page: object, server: Served) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    sign_in(page, server.key)
    refused = page.request.post("/dnc", form={"phone_number": "+14155550124"})
    assert refused.status == 403
    wrong = page.request.post("/dnc", form={"phone_number": "+14155550124", "csrf": "guess"})
    assert wrong.status == 403
    listed = httpx.get(f"{server.base_url}/v1/dnc", headers={"authorization": server.key})
    assert "+14155550124" not in listed.text


def test_sign_out_sends_every_page_back_to_sign_in(page: object, server: Served) -> None:
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    sign_in(page, server.key)
    cookies = page.context.cookies()
    session = next(c for c in cookies if c["name"] == "callfleet_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert server.key not in session["value"]
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    for path in ("/batches", "/batches/new", "/dnc", "/numbers"):
        page.goto(path)
        expect(page).to_have_url(re.compile(r"/sign-in$"))
    assert page.request.get("/batches/x/live").status == 401


@pytest.fixture(scope="module")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # Real conversations: the simulator's people talk at a speed the agent can follow.
    yield from _serve(
        tmp_path_factory.mktemp("dash-agent"),
        agent=True,
        time_scale=0.4,
        CALLFLEET_WEBHOOK_ALLOW_PRIVATE="true",  # the test's receiver is on loopback
    )


@pytest.fixture
def webhook_receiver() -> Iterator[str]:
    """A loopback HTTP server that answers every webhook 200."""

    class Answer(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hooks/call-ended"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_call_page_plays_its_recording(
    browser: object, agent_server: Served, webhook_receiver: str
) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    context = browser.new_context(
        base_url=agent_server.base_url, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        sign_in(page, agent_server.key)
        page.get_by_role("link", name="New batch").first.click()
        page.get_by_label("Prompt").fill("You are calling {{name}} to confirm an appointment.")
        page.get_by_label("Rows").fill(
            "phone_number,name\n+12125550101,Ada\n+12125550145,Bo\n+12125550160,Cy\n"
        )
        page.get_by_label("Label").fill("Appointment reminders")
        page.get_by_label("First sentence").fill("Hi, this is the clinic calling.")
        page.get_by_label("Max duration (minutes)").fill("1")
        page.get_by_label("Webhook URL").fill(webhook_receiver)
        page.get_by_label("Calling window start").fill("00:00")
        page.get_by_label("Calling window end").fill("24:00")
        page.get_by_label("Record the calls").check()
        page.get_by_label("Detect answering machines").check()
        page.get_by_role("button", name="Send batch").click()
        bar = page.get_by_role("progressbar", name="Progress")
        expect(bar).to_have_js_property("value", 3, timeout=180_000)
        shots = os.environ.get("CALLFLEET_DASHBOARD_SCREENSHOTS")
        page.reload()  # the latency histogram is drawn on the server
        if shots:
            page.screenshot(path=str(Path(shots) / "dashboard-batch.png"), full_page=True)
        page.get_by_role("link", name="+12125550101").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Call to +12125550101")
        expect(page.locator(".turn.agent").first).to_be_visible()
        expect(page.locator(".turn.callee").first).to_be_visible()
        expect(page.locator('[data-field="answered_by"]')).to_have_text("human")
        audio = page.locator("audio")
        expect(audio).to_have_attribute("controls", "")
        page.wait_for_function(
            "() => { const a = document.querySelector('audio');"
            " return a && a.readyState >= 1 && a.duration > 0; }",
            timeout=20_000,
        )
        duration = page.evaluate("document.querySelector('audio').duration")
        assert duration > 1, duration
        # The call's webhook, with its attempt log (the sender may still be at it).
        delivery = page.locator("section.delivery").first
        for _ in range(30):
            text = delivery.text_content() if delivery.count() else None
            if text and "delivered" in text:
                break
            time.sleep(0.5)
            page.reload()
        expect(delivery.locator("h3")).to_contain_text("/hooks/call-ended")
        expect(delivery).to_contain_text("delivered")
        expect(delivery.locator("tbody tr").first).to_contain_text("200")
        if shots:
            page.screenshot(path=str(Path(shots) / "dashboard-call.png"), full_page=True)
    finally:
        context.close()


def test_rehearse_calls_the_simulators_people_and_never_the_rows(
    browser: object, agent_server: Served
) -> None:
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    context = browser.new_context(
        base_url=agent_server.base_url, viewport={"width": 1280, "height": 900}
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    real = ["+14155550141", "+14155550142", "+14155550143", "+14155550144", "+14155550145"]
    try:
        sign_in(page, agent_server.key)
        page.get_by_role("link", name="New batch").first.click()
        page.get_by_label("Prompt").fill("You are calling {{name}} to confirm a delivery.")
        page.get_by_label("Rows").fill(
            "phone_number,name\n" + "".join(f"{n},P{i}\n" for i, n in enumerate(real))
        )
        page.get_by_label("Label").fill("Delivery rehearsal")
        page.get_by_label("First sentence").fill("Hi, this is the delivery service calling.")
        page.get_by_label("Max duration (minutes)").fill("1")
        page.get_by_label("Detect answering machines").check()
        page.get_by_role("button", name="Rehearse").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Delivery rehearsal")
        expect(page.locator(".tag.rehearsal").first).to_be_visible()
        bar = page.get_by_role("progressbar", name="Progress")
        expect(bar).to_have_attribute("max", "4")
        expect(bar).to_have_js_property("value", 4, timeout=180_000)
        stood_in = re.compile(r"row 1 \(\+14155550141\) as person")
        expect(page.get_by_role("cell", name=stood_in)).to_be_visible()
        page.get_by_role("link", name="+12125550100").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Call to +12125550100")
        expect(page.locator(".notice")).to_contain_text("+14155550141 was not dialled")
        expect(page.locator(".turn.agent").first).to_be_visible()
        expect(page.locator(".turn.callee").first).to_be_visible()
        page.get_by_role("link", name="Batches").click()
        row = page.locator("tr", has=page.get_by_role("link", name="Delivery rehearsal"))
        expect(row.locator(".tag.rehearsal")).to_have_text("rehearsal")
        api = {"authorization": agent_server.key}
        for number in real:
            found = httpx.get(
                f"{agent_server.base_url}/v1/calls", params={"to_number": number}, headers=api
            )
            assert found.json()["count"] == 0, f"{number} was dialled"
    finally:
        context.close()


def test_demo_keep_leaves_the_dashboard_up_until_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLEET_")}
    env.update({"CALLFLEET_DATA_DIR": str(tmp_path), "NO_COLOR": "1", "COLUMNS": "200"})
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [callfleet_command(), "demo", "--keep", "--speed", "0"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while "Press Ctrl-C to stop." not in out.read_text():
            assert proc.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(0.3)
        text = out.read_text()
        url = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+)/", text)
        key = re.search(r"Sign in with this API key: (cf_[A-Za-z0-9_-]+)", text)
        assert url and key, text
        with httpx.Client(base_url=url.group(1), follow_redirects=True) as client:
            form = client.get("/sign-in")
            token = re.search(r'name="signin_token" value="([^"]+)"', form.text)
            assert token
            signed = client.post(
                "/sign-in", data={"api_key": key.group(1), "signin_token": token.group(1)}
            )
            assert signed.url.path == "/batches" and "callfleet demo" in signed.text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, out.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_upload_a_csv_through_the_api_and_append_rows(
    page: object, server: Served, tmp_path: Path
) -> None:
    """New batch uploads the file to `POST /v1/batches` (multipart): the API parses it
    and names bad rows by CSV line; the batch page appends rows through
    `POST /v1/batches/{id}/calls`."""
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    sign_in(page, server.key)
    page.get_by_role("link", name="New batch").first.click()
    page.get_by_label("Prompt").fill("Hello {{name}}.")
    upload = tmp_path / "tabs.csv"  # tabs, a quoted newline, an empty line, a bad number
    upload.write_text(
        'TO\tname\tnote\n+12125550101\tAda\t"two\nlines"\n\n12345\tBad\tx\n+12125550160\tBo\ty\n'
    )
    page.get_by_label("CSV file", exact=True).set_input_files(upload)
    page.get_by_label("Label").fill("Uploaded and appended")
    start, end = closed_window()
    page.get_by_label("Calling window start").fill(start)
    page.get_by_label("Calling window end").fill(end)
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_text("2 of 3 rows are valid")).to_be_visible()
    bad = page.locator("tr.bad")
    expect(bad.locator("td").first).to_have_text("5")  # the line after the quoted newline
    expect(bad).to_contain_text("CSV line 5")
    page.get_by_label("CSV file", exact=True).set_input_files(upload)
    page.get_by_role("button", name="Send batch").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Uploaded and appended")
    expect(page.locator('[data-field="total"]')).to_have_text("2")
    more = tmp_path / "more.csv"
    more.write_text("\ufeffphone;name\n+12125550180;Cy\n+12125550101;Ada again\n")
    page.get_by_label("CSV file to append").set_input_files(more)
    page.get_by_role("button", name="Append rows").click()
    status = page.get_by_role("status")
    expect(status).to_contain_text("1 calls appended")
    expect(status).to_contain_text("already in this batch")
    expect(status).to_contain_text("CSV line 3")
    expect(page.locator('[data-field="total"]')).to_have_text("3")
    page.get_by_label("Rows to append").fill("phone_number,name\n+12125550190,Di\n")
    page.get_by_role("button", name="Append rows").click()
    expect(page.get_by_role("status")).to_contain_text("1 calls appended")
    expect(page.locator('[data-field="total"]')).to_have_text("4")
    expect(page.get_by_role("link", name="+12125550190")).to_be_visible()
    page.once("dialog", lambda d: d.accept())  # type: ignore[attr-defined]
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("status")).to_contain_text("4 calls cancelled")
    expect(page.get_by_role("button", name="Append rows")).to_have_count(0)  # stopped


def test_the_batch_page_follows_the_event_stream(page: object, server: Served) -> None:
    """The batch page's live source is the Server-Sent Events stream (not polling), and
    the progress reaches the end without a reload; prints the time from the last call's
    end to the page showing it."""
    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    sign_in(page, server.key)
    body = {
        "base_prompt": "Hello.",
        "label": "Streamed run",
        "call_data": [{"phone_number": f"+1212555{n:04d}"} for n in (102, 103, 104)],
        "calling_window": {"start": "00:00", "end": "24:00"},
        # Not before the page is open: the calls start a few seconds from now.
        "start_time": (datetime.now(ZoneInfo("UTC")) + timedelta(seconds=8)).isoformat(),
    }
    api = httpx.Client(base_url=server.base_url, headers={"authorization": server.key}, timeout=30)
    batch_id = api.post("/v1/batches", json=body).json()["batch_id"]
    page.goto(f"/batches/{batch_id}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Streamed run")
    page.evaluate(
        """() => { window.__noReload = true; const bar = document.querySelector('[data-progress]');
        const t = setInterval(() => { if (bar.value >= 3) { window.__doneAt = Date.now();
        clearInterval(t); } }, 10); }"""
    )
    expect(page.locator("html")).to_have_attribute("data-live-source", "sse")
    bar = page.get_by_role("progressbar", name="Progress")
    expect(bar).to_have_js_property("value", 3, timeout=90_000)
    assert page.evaluate("window.__noReload") is True
    shown_ms = page.evaluate("window.__doneAt")
    calls = api.get(f"/v1/batches/{batch_id}").json()["call_data"]
    ended = max(
        datetime.fromisoformat(api.get(f"/v1/calls/{c['call_id']}").json()["end_at"]) for c in calls
    )
    print(f"\nlast call end → batch page shows it: {shown_ms - ended.timestamp() * 1000:.0f} ms")
    api.close()


def test_pause_resume_and_export_a_batch(page: object, server: Served, tmp_path: Path) -> None:
    """Paused before its start time comes, no call starts; resumed, all end; the
    "Export CSV" download has the uploaded rows in order, with their results."""
    import csv
    import io
    from datetime import UTC

    from playwright.sync_api import Page, expect

    assert isinstance(page, Page)
    rows = list(csv.DictReader(io.StringIO(ROWS)))
    start = datetime.now(UTC) + timedelta(seconds=4)
    sent = httpx.post(
        f"{server.base_url}/v1/batches",
        headers={"authorization": server.key},
        json={
            "base_prompt": "Hello {{name}}.",
            "call_data": rows,
            "label": "Paused then resumed",
            "calling_window": {"start": "00:00", "end": "24:00"},
            "start_time": start.strftime("%Y-%m-%d %H:%M:%S"),
            "timezone": "UTC",
        },
        timeout=30,
    )
    assert sent.status_code == 200, sent.text
    batch_id = sent.json()["batch_id"]
    sign_in(page, server.key)
    page.goto(f"/batches/{batch_id}")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("status")).to_contain_text("Batch paused")
    expect(page.locator('[data-field="state"]')).to_have_text("paused")
    # Well past the start time: many hopper passes, and still nothing dialled.
    time.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()) + 3)
    page.reload()
    expect(page.locator('[data-field="queued"]')).to_have_text("4")
    expect(page.locator('[data-field="live"]')).to_have_text("0")
    expect(page.locator('[data-field="done"]')).to_have_text("0")
    page.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_contain_text("Batch running")
    expect(page.get_by_role("progressbar", name="Progress")).to_have_js_property(
        "value", 4, timeout=90_000
    )
    with page.expect_download() as info:
        page.get_by_role("link", name="Export CSV").click()
    saved = tmp_path / "export.csv"
    info.value.save_as(saved)
    table = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert [(r["phone_number"], r["name"]) for r in table] == [
        (r["phone_number"], r["name"]) for r in rows
    ]
    assert list(table[0])[:3] == ["phone_number", "name", "call_id"]
    assert all(r["status"] for r in table), table

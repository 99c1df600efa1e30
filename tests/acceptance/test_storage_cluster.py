"""Recordings follow the call across machines: `callfleet serve` and two `callfleet
worker` processes, each with its own data directory (as on separate machines),
against one PostgreSQL database and one S3-compatible store (moto's server on
loopback), placing real SIP calls to `callfleet simulator`.

The API serves recordings that only a worker's disk ever had. Then a worker is made
to exit between the end of a call and its upload (`CALLFLEET_FAULT_EXIT_BEFORE_UPLOAD`,
the process dies with the upload staged but not done); started again on the same data
directory, it uploads the recording, and the API serves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from test_scale_cluster import Cluster

from conftest import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _recordings(cluster: Cluster, batch_id: str) -> dict[str, tuple[str | None, str | None]]:
    rows = cluster.pg(
        "SELECT id, recording_state, recording_path FROM calls WHERE batch_id = %s", batch_id
    )
    return {r[0]: (r[1], r[2]) for r in rows}


def test_the_api_serves_recordings_that_only_a_worker_had(
    pg_url: str, tmp_path: Path, s3_server: Any
) -> None:
    bucket = s3_server.make_bucket()
    cluster = Cluster(
        tmp_path,
        pg_url,
        overrides={"CALLFLEET_STORAGE_URL": f"s3://{bucket}/rec", **s3_server.env()},
    )
    try:
        _run(cluster, tmp_path, s3_server, bucket)
    finally:
        cluster.close()
        print(cluster.logs())
    assert not cluster.hung


def _worker_on(cluster: Cluster, name: str, data_dir: Path, **env: str) -> Any:
    """A worker with its own data directory (its own machine, as far as files go);
    with `env`, a process expected to die: started without waiting for it."""
    saved = dict(cluster.env)
    cluster.env.update(CALLFLEET_DATA_DIR=str(data_dir), **env)
    try:
        if env:
            return cluster._spawn(name, ["worker", "--concurrency", "5"])
        return cluster.worker(name, concurrency=5, wait=False)
    finally:
        cluster.env.clear()
        cluster.env.update(saved)


def _run(cluster: Cluster, tmp_path: Path, s3: Any, bucket: str) -> None:
    cluster.simulator(hold_s=0.5)
    key = cluster.new_key()
    api = cluster.serve(wait=False)
    disks = {name: tmp_path / name for name in ("machine-1", "machine-2")}
    first = _worker_on(cluster, "w1", disks["machine-1"])
    second = _worker_on(cluster, "w2", disks["machine-2"])
    cluster.ready()
    cluster.trunk_to_simulator(api, key)
    batch_id = cluster.submit(api, key, 6, record=True)
    cluster.wait_ended(batch_id, 6, timeout=90)

    def all_stored() -> bool:
        return {s for s, _ in _recordings(cluster, batch_id).values()} == {"stored"}

    wait_for(all_stored, timeout=30, interval=0.2)
    pids = {
        int(row[0].rsplit(":", 1)[1])
        for row in cluster.pg(
            "SELECT worker FROM call_attempts a JOIN calls c ON c.id = a.call_id "
            "WHERE c.batch_id = %s",
            batch_id,
        )
    }
    assert pids and pids <= {first.pid, second.pid}  # the workers carried the calls
    with httpx.Client(base_url=api.base, headers={"authorization": key}, timeout=30) as client:
        for call_id, (_state, object_key) in _recordings(cluster, batch_id).items():
            got = client.get(f"/v1/calls/{call_id}/recording")
            assert got.status_code == 200, got.text
            assert got.content[:4] == b"RIFF" and got.headers["content-type"] == "audio/wav"
            assert object_key == f"recordings/{call_id}-1.wav"
            part = client.get(f"/v1/calls/{call_id}/recording", headers={"range": "bytes=0-3"})
            assert (part.status_code, part.content) == (206, b"RIFF")
    # The API's machine never had them; the workers' copies went once uploaded.
    assert not list(tmp_path.glob("recordings/*.wav"))
    for disk in disks.values():
        assert not list(disk.glob("recordings/*.wav"))
        assert (disk / "node-id").exists()

    # A worker dies between the end of a call and its upload.
    cluster.kill(first)
    cluster.kill(second)
    doomed = _worker_on(
        cluster, "w1-crashing", disks["machine-1"], CALLFLEET_FAULT_EXIT_BEFORE_UPLOAD="1"
    )
    cluster.submit(api, key, 1, record=True)
    assert doomed.popen.wait(timeout=120) == 86, cluster.tail(doomed)
    crashed = cluster.pg("SELECT call_id, local_path FROM recording_uploads")
    assert len(crashed) == 1, crashed
    call_id, local = crashed[0]
    assert Path(local).is_file() and Path(local).is_relative_to(disks["machine-1"])
    with httpx.Client(base_url=api.base, headers={"authorization": key}, timeout=30) as client:
        assert client.get(f"/v1/calls/{call_id}/recording").status_code == 503
        _worker_on(cluster, "w1-again", disks["machine-1"])
        cluster.ready()

        def served() -> bytes | None:
            got = client.get(f"/v1/calls/{call_id}/recording")
            return got.content if got.status_code == 200 else None

        body = wait_for(served, timeout=90, interval=0.5)
    assert body[:4] == b"RIFF"
    assert not Path(local).exists()
    assert cluster.pg("SELECT count(*) FROM recording_uploads")[0][0] == 0

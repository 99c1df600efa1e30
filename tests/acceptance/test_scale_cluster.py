"""A callfleet cluster of real processes, for the scale acceptance tests.

`Cluster` runs `callfleet serve` (API + hopper, leader-elected) and `callfleet
worker` subprocesses against one PostgreSQL database, with the procrastinate engine,
and `callfleet simulator` as the account's SIP trunk: the workers place real SIP
calls (with RTP) to it, in its fast mode (answering numbers answer at once, stay up
`--fast-hold-s`, then hang up), with the AI agent off. The simulator refuses with 503
beyond the account's cap and writes its own record of every INVITE and call end
(`--invite-log`): that record, not our database, is what "never dialled twice" and
"never above the cap" are checked against, alongside the `call_attempts` table. A
small HTTP receiver counts the batch webhook's deliveries by `webhook-id`.

The other `test_scale_*.py` files import this module; its own tests check that the
distributed mode refuses SQLite clearly, that the simulator records one SIP call per
number of a small batch (busy and declining numbers among them), that stopping a
batch hangs up its live calls (our BYE reaches the phones), and that SIGTERM stops a
worker gracefully. Process logs are printed when a test fails (`SCALE_LOG_LEVEL=info`
makes them talkative); a process that ignores SIGTERM for 20 s fails the test and
dumps its threads (faulthandler).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from callfleet.domain.phones import _geographic_area_codes
from callfleet.store.accounts import create_account, create_key
from callfleet.store.db import Database
from callfleet.store.tables import call_attempts, calls, webhook_deliveries
from callfleet.worker import SHUTDOWN_NOTE
from conftest import free_port, wait_for

BIN = Path(sys.executable).parent / "callfleet"
ALWAYS = {"start": "00:00", "end": "24:00"}
PEOPLE = range(40)
"""Simulator numbers +1 NPA 555-01XX whose XX is a person: they answer."""
REFUSING = tuple(xx for pair in zip(range(60, 70), range(80, 90), strict=True) for xx in pair)
"""Busy (60-69) and declining (80-89) simulator numbers, alternating: an immediate
non-2xx final in the fast mode."""
SLOW_S = 5.0
"""An answered call of the fast mode that takes longer than this from answer to end
lost SIP messages on the way (a retransmission timer fired)."""


def numbers(n: int, *, refusing_every: int = 0, endings: Iterable[int] = PEOPLE) -> list[str]:
    """`n` distinct simulator numbers with the given endings, across area codes;
    with `refusing_every=k`, every k-th is busy or declines instead."""
    codes = sorted(_geographic_area_codes())
    answering = iter([f"+1{code}55501{xx:02d}" for xx in endings for code in codes])
    refusing = iter([f"+1{code}55501{xx:02d}" for code in codes for xx in REFUSING])
    out = [
        next(refusing if refusing_every and i % refusing_every == refusing_every - 1 else answering)
        for i in range(n)
    ]
    return out


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class PhoneRecord:
    """What the simulator received, read from its `--invite-log` (one JSON object a line)."""

    invites: list[dict[str, Any]]
    ends: dict[str, dict[str, Any]]
    """By SIP Call-ID."""
    peak: int
    """The most calls the simulator held at once (its `max_concurrent_seen`)."""
    rejected: int
    """INVITEs it refused with 503 for being over `--max-concurrent`."""
    summary: dict[str, Any] | None

    @classmethod
    def read(cls, path: Path) -> PhoneRecord:
        invites: list[dict[str, Any]] = []
        ends: dict[str, dict[str, Any]] = {}
        peak = rejected = 0
        summary = None
        for line in path.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # being written
            entry = json.loads(line)
            event = entry["event"]
            if event == "invite":
                invites.append(entry)
            elif event == "end":
                ends[entry["call_id"]] = entry
            elif event == "peak":
                peak = max(peak, entry["live"])
            elif event == "rejected":
                rejected = max(rejected, entry["rejected_over_capacity"])
            elif event == "summary":
                summary = entry
        return cls(invites, ends, peak, rejected, summary)

    def call_ids_by_number(self) -> dict[str, set[str]]:
        """Number -> the distinct SIP Call-IDs of its INVITEs (re-INVITEs aside)."""
        out: dict[str, set[str]] = {}
        for invite in self.invites:
            if not invite["in_dialog"]:
                out.setdefault(invite["number"], set()).add(invite["call_id"])
        return out

    def call_ids_by_attempt(self) -> dict[str, set[str]]:
        """`<call id>;attempt=<n>` (our INVITE header) -> the distinct SIP Call-IDs that
        carried it: one, for an attempt dialled once."""
        out: dict[str, set[str]] = {}
        for invite in self.invites:
            tag = invite.get("callfleet_call")
            if tag and not invite["in_dialog"]:
                out.setdefault(tag, set()).add(invite["call_id"])
        return out

    def transactions_by_call_id(self) -> Counter[str]:
        """Call-ID -> how many INVITE transactions it opened (retransmissions aside, and
        the ones answered with a 407 challenge, which the caller must repeat)."""
        return Counter(
            i["call_id"]
            for i in self.invites
            if not (i["in_dialog"] or i["retransmission"] or i["challenged"])
        )

    def refused(self) -> list[dict[str, Any]]:
        """The INVITEs refused with 503 (over `--max-concurrent`): new calls that never
        became a session, so have no `end`."""
        return [
            i
            for i in self.invites
            if not (i["in_dialog"] or i["retransmission"]) and i["call_id"] not in self.ends
        ]

    def orphans(self) -> list[dict[str, Any]]:
        """Answered calls whose caller never acknowledged the answer (no ACK): a worker
        killed between its INVITE and the 200 OK. The simulator holds such a call until
        it gives up waiting for the ACK, and it fills one of its lines all that time."""
        return [
            e
            for e in self.ends.values()
            if e["answered_at"] is not None and "ACK" not in e["requests"]
        ]

    def held_at(self, at: float, *, orphans: bool) -> int:
        """The calls the simulator held at a moment, with or without the orphans."""
        orphaned = {e["call_id"] for e in self.orphans()}
        return sum(
            1
            for e in self.ends.values()
            if e["received_at"] <= at < e["ended_at"] and (orphans or e["call_id"] not in orphaned)
        )

    def answer_to_end(self) -> dict[str, float]:
        """Call-ID -> seconds from the simulator's 200 OK to the call's end."""
        return {
            call_id: end["ended_at"] - end["answered_at"]
            for call_id, end in self.ends.items()
            if end["answered_at"] is not None
        }


class Receiver:
    """A webhook receiver on loopback: records (path, webhook-id) of every request."""

    def __init__(self) -> None:
        seen: list[tuple[str, str]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                self.rfile.read(length)
                seen.append((self.path, self.headers.get("webhook-id", "")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Cluster:
    tmp: Path
    db_url: str
    overrides: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    hung: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.invite_log = self.tmp / "invites.jsonl"
        self.phones: Proc | None = None
        self._starting: list[Callable[[], bool]] = []
        env = dict(os.environ)
        env.update(
            CALLFLEET_DATA_DIR=str(self.tmp),
            CALLFLEET_DATABASE_URL=self.db_url,
            CALLFLEET_ENGINE="procrastinate",
            CALLFLEET_CARRIER="sip",
            CALLFLEET_AGENT_ENABLED="false",
            CALLFLEET_ACCOUNT_CONCURRENCY="20",
            CALLFLEET_DEFAULT_CPS="1000",
            CALLFLEET_HOPPER_INTERVAL_S="0.05",
            CALLFLEET_LEADER_INTERVAL_S="0.3",
            CALLFLEET_LEASE_S="2",
            CALLFLEET_WORKER_STALLED_S="3",
            CALLFLEET_WORKER_SHUTDOWN_DEADLINE_S="2",
            CALLFLEET_WEBHOOK_ALLOW_PRIVATE="true",
            CALLFLEET_TRUNK_ALLOW="127.0.0.0/8",  # `callfleet simulator` is on loopback
            CALLFLEET_WEBHOOK_RETRY_SCALE="0.01",
            PYTHONFAULTHANDLER="1",
            PYTHONUNBUFFERED="1",
            CALLFLEET_LOG_LEVEL=os.environ.get("SCALE_LOG_LEVEL", "warning"),
        )
        env.update(self.overrides)
        self.env = env
        self.db = Database(self.db_url.replace("postgresql://", "postgresql+psycopg://", 1))

    # -- processes

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [str(BIN), *args], env=self.env, capture_output=True, check=False, timeout=120
        )
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        return out.stdout.decode()

    def new_key(self) -> str:
        """Migrate (ours and procrastinate's schema) and make an account's API key."""
        self.cli("migrate")
        with self.db.write() as conn:  # what `callfleet keys create` does, minus a start-up
            return create_key(conn, create_account(conn, "scale").id, "scale")

    def _spawn(self, name: str, args: list[str], port: int | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            [str(BIN), *args], env=self.env, stdout=handle, stderr=subprocess.STDOUT
        )
        handle.close()
        proc = Proc(name, popen, log, port)
        self.procs.append(proc)
        return proc

    def serve(self, name: str = "api", *, wait: bool = True) -> Proc:
        """Start `callfleet serve`; with `wait=False`, `ready()` waits for it later."""
        port = free_port()
        proc = self._spawn(name, ["serve", "--port", str(port)], port)

        def up() -> bool:
            assert proc.popen.poll() is None, f"{name} exited:\n{self.tail(proc)}"
            try:
                return httpx.get(f"{proc.base}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        self._starting.append(up)
        if wait:
            self.ready()
        return proc

    def worker(self, name: str, concurrency: int, *, wait: bool = True) -> Proc:
        """Start `callfleet worker`; with `wait=False`, `ready()` waits for it later."""
        proc = self._spawn(name, ["worker", "--concurrency", str(concurrency)])

        def registered() -> bool:
            assert proc.popen.poll() is None, f"{name} exited:\n{self.tail(proc)}"
            return self._has_backend(f"callfleet-worker %:{proc.pid}")

        self._starting.append(registered)
        if wait:
            self.ready()
        return proc

    def ready(self) -> None:
        """Wait until every process started so far is up (they start up in parallel)."""
        while self._starting:
            wait_for(self._starting[0], timeout=60, interval=0.1)
            self._starting.pop(0)

    def simulator(self, cap: int | None = None, hold_s: float = 0.2) -> Proc:
        """Start `callfleet simulator` in its fast mode (it starts up while the rest
        does; `trunk_to_simulator` waits for it).

        It refuses calls beyond `cap` (default: the account's) with 503, and
        answering numbers hang up after `hold_s`."""
        limit = cap if cap is not None else int(self.env["CALLFLEET_ACCOUNT_CONCURRENCY"])
        self.phones = self._spawn(
            "simulator",
            [
                "simulator",
                "--port",
                "0",
                "--time-scale",
                "0",
                "--fast-hold-s",
                str(hold_s),
                "--max-concurrent",
                str(limit),
                "--invite-log",
                str(self.invite_log),
            ],
        )
        return self.phones

    def trunk_to_simulator(self, api: Proc, key: str) -> None:
        """Make the simulator (started now if not yet) the account's default SIP trunk."""
        phones = self.phones or self.simulator()

        def listening() -> dict[str, Any] | None:
            assert phones.popen.poll() is None, f"simulator exited:\n{self.tail(phones)}"
            if not self.invite_log.exists():
                return None
            first = self.invite_log.read_text().partition("\n")
            return json.loads(first[0]) if first[1] else None

        where = wait_for(listening, timeout=60, interval=0.05)
        body = {
            "name": "simulator",
            "host": where["host"],
            "port": where["port"],
            "transport": "udp",
            "cps": 1000,
            "default": True,
        }
        resp = httpx.post(
            f"{api.base}/v1/trunks", headers={"authorization": key}, json=body, timeout=30
        )
        assert resp.status_code == 200, resp.text

    def phone_record(self) -> PhoneRecord:
        return PhoneRecord.read(self.invite_log)

    def _has_backend(self, pattern: str) -> bool:
        rows = self.pg(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s", pattern
        )
        return bool(rows[0][0])

    def kill(self, proc: Proc, sig: int = signal.SIGKILL) -> None:
        proc.popen.send_signal(sig)
        proc.popen.wait(timeout=60)

    def close(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.popen.send_signal(signal.SIGABRT)  # faulthandler prints every thread
                proc.popen.wait(timeout=10)
                self.hung.append(proc.name)
        self.db.dispose()

    def tail(self, proc: Proc, lines: int = 40) -> str:
        text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid})\n{self.tail(p)}" for p in self.procs)

    # -- database and API

    def pg(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query, args)
            return cur.fetchall() if cur.description else []

    def leader_pid(self) -> int | None:
        """The OS pid of the API process holding the hopper's lock (from pg_locks)."""
        rows = self.pg(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.classid = 1667656820 AND l.objid = 1 "
            "AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        if not rows:
            return None
        return int(str(rows[0][0]).rsplit(":", 1)[1])

    def submit(
        self, api: Proc, key: str, count: int, *, refusing_every: int = 0, **extra: Any
    ) -> str:
        body = {
            "base_prompt": "Hi",
            "call_data": [
                {"phone_number": n} for n in numbers(count, refusing_every=refusing_every)
            ],
            "calling_window": ALWAYS,
            **extra,
        }
        resp = httpx.post(
            f"{api.base}/v1/batches", headers={"authorization": key}, json=body, timeout=120
        )
        assert resp.status_code == 200, resp.text
        batch_id: str = resp.json()["batch_id"]
        return batch_id

    def ended(self, batch_id: str) -> int:
        rows = self.pg(
            "SELECT count(*) FROM calls WHERE batch_id = %s AND state = 'ended'", batch_id
        )
        return int(rows[0][0])

    def wait_ended(self, batch_id: str, count: int, timeout: float) -> None:
        wait_for(lambda: self.ended(batch_id) >= count, timeout=timeout, interval=0.1)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = [(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals]
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    peak = live = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    return peak


@dataclass
class Verdict:
    calls: int
    interrupted: int
    sip_calls: int
    """Distinct SIP Call-IDs the simulator received for the batch's numbers."""
    retransmitted: int
    """INVITE retransmissions among them (UDP: Timer A fired before a response)."""
    sim_peak: int
    db_peak: int
    slowest_s: float
    """The longest answer-to-end of an answered call, as the simulator saw it."""
    slow: int
    """Answered calls slower than `SLOW_S` from answer to end."""
    db_slowest_s: float
    """The longest answer-to-end in our database (it includes our side's BYE)."""
    statuses: Counter[str]


def _settle(cluster: Cluster, wanted: set[str], timeout: float = 3) -> PhoneRecord:
    """The simulator's record once it shows an end for every Call-ID in `wanted` (it
    polls its own state every 50 ms), or as it is after `timeout`: a call cut by a
    killed worker may wait for an ACK that never comes."""
    deadline = time.monotonic() + timeout
    while True:
        record = cluster.phone_record()
        if wanted <= set(record.ends) or time.monotonic() > deadline:
            return record
        time.sleep(0.05)


def check_batch(
    cluster: Cluster, batch_id: str, count: int, cap: int, *, killed: bool = False
) -> Verdict:
    """Every promise of the issue, from the simulator's own record and from the database."""
    with cluster.db.read() as conn:
        rows = conn.execute(
            sa.select(
                calls.c.id,
                calls.c.to_number,
                calls.c.state,
                calls.c.status,
                calls.c.error_message,
                calls.c.answered_at,
                calls.c.ended_at,
            ).where(calls.c.batch_id == batch_id)
        ).all()
        attempts = conn.execute(
            sa.select(
                call_attempts.c.call_id,
                call_attempts.c.attempt,
                call_attempts.c.started_at,
                call_attempts.c.ended_at,
            )
            .join(calls, calls.c.id == call_attempts.c.call_id)
            .where(calls.c.batch_id == batch_id)
        ).all()
        deliveries = conn.execute(
            sa.select(webhook_deliveries.c.id).where(
                webhook_deliveries.c.batch_id == batch_id,
                webhook_deliveries.c.event == "batch.completed",
            )
        ).all()
        batch_status = conn.execute(
            sa.text("SELECT status, remaining FROM batches WHERE id = :id"), {"id": batch_id}
        ).one()
    ids = {r.id for r in rows}
    # Every call is terminal, and the batch is done.
    assert len(rows) == count
    assert {r.state for r in rows} == {"ended"}, Counter(r.state for r in rows)
    assert tuple(batch_status) == ("completed", 0)
    claimed = Counter(a.call_id for a in attempts)
    assert len({(a.call_id, a.attempt) for a in attempts}) == len(attempts)
    assert set(claimed) <= ids

    # No number got two INVITEs for one attempt: what the simulator received. Each
    # number is one call of this batch, and each attempt one SIP Call-ID, so a number
    # has as many Call-IDs as the call has attempts. A call whose worker was killed
    # may have claimed an attempt and died before its INVITE left: fewer, never more.
    by_number = {r.to_number: r for r in rows}
    assert len(by_number) == count, "the batch's numbers should be distinct"
    record = cluster.phone_record()
    received = {n: c for n, c in record.call_ids_by_number().items() if n in by_number}
    record = _settle(cluster, set().union(*received.values()) if received else set())
    received = {n: c for n, c in record.call_ids_by_number().items() if n in by_number}
    mismatched = {}
    for number, row in by_number.items():
        got, want = len(received.get(number, ())), claimed[row.id]
        cut = bool(row.error_message and "Interrupted" in row.error_message)
        if got > want or (got < want and not cut):
            mismatched[number] = (got, want, row.status, row.error_message)
    assert not mismatched, f"(Call-IDs received, attempts claimed): {mismatched}"
    # And by attempt, from the header each INVITE carries: one SIP call per attempt,
    # and only attempts the database says were claimed.
    tagged = {
        tag: sip_calls
        for tag, sip_calls in record.call_ids_by_attempt().items()
        if tag.split(";")[0] in ids
    }
    twice_dialled = {tag: len(c) for tag, c in tagged.items() if len(c) != 1}
    assert not twice_dialled, f"attempts dialled as several SIP calls: {twice_dialled}"
    claimed_tags = {f"{a.call_id};attempt={a.attempt}" for a in attempts}
    assert set(tagged) <= claimed_tags, set(tagged) - claimed_tags
    assert len(tagged) >= len(claimed_tags) - sum(
        1 for r in rows if r.error_message and "Interrupted" in r.error_message
    )
    mine = set().union(*received.values()) if received else set()
    transactions = record.transactions_by_call_id()
    twice = {c: n for c, n in transactions.items() if c in mine and n != 1}
    assert not twice, f"one attempt, several INVITE transactions: {twice}"

    # The account's cap held where the carrier sees calls: the simulator's own
    # high-water mark, and it never had to refuse one of our calls for being over it.
    # The one exception is a line a killed worker left taken: a call it dialled and
    # died before acknowledging the answer, which the simulator holds until it gives
    # up on the ACK while our database, rightly, has freed its slot. A refusal then
    # counts only if our own calls filled the cap.
    assert record.peak <= cap, f"the simulator held {record.peak} calls at once, cap {cap}"
    refused = record.refused()
    assert len(refused) == record.rejected, (len(refused), record.rejected)
    if not killed:
        assert not record.orphans(), f"answered calls never acknowledged: {record.orphans()}"
    ours_full = [i for i in refused if record.held_at(i["at"], orphans=False) >= cap]
    assert not ours_full, f"{len(ours_full)} INVITEs refused with 503 with our calls at the cap"
    if refused:
        print(
            f"{len(refused)} INVITEs refused while {len(record.orphans())} line(s) were "
            "held by calls of the killed worker; our calls stayed under the cap"
        )
    db_spans = [
        (a.started_at.timestamp(), (a.ended_at or a.started_at).timestamp()) for a in attempts
    ]
    db_peak = max_overlap(db_spans)
    assert db_peak <= cap, f"{db_peak} attempts at once in call_attempts, cap {cap}"
    # The batch webhook was written exactly once.
    assert len(deliveries) == 1, f"{len(deliveries)} batch.completed deliveries"

    durations = [s for c, s in record.answer_to_end().items() if c in mine]
    interrupted = sum(1 for r in rows if r.error_message and "Interrupted" in r.error_message)
    return Verdict(
        calls=len(rows),
        interrupted=interrupted,
        sip_calls=len(mine),
        retransmitted=sum(
            1 for i in record.invites if i["call_id"] in mine and i["retransmission"]
        ),
        sim_peak=record.peak,
        db_peak=db_peak,
        slowest_s=max(durations, default=0.0),
        slow=sum(1 for s in durations if s > SLOW_S),
        db_slowest_s=max(
            ((r.ended_at - r.answered_at).total_seconds() for r in rows if r.answered_at),
            default=0.0,
        ),
        statuses=Counter(str(r.status) for r in rows),
    )


def wait_webhook_once(receiver: Receiver, path: str = "/batch", timeout: float = 30) -> None:
    wait_for(lambda: any(p == path for p, _ in receiver.seen), timeout=timeout)
    time.sleep(0.5)  # a second delivery, if there were one, would arrive meanwhile
    ids = {wid for p, wid in receiver.seen if p == path}
    assert len(ids) == 1, receiver.seen


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path, pg_url)
    try:
        yield made
    finally:
        made.close()
        print(made.logs())  # pytest shows it when the test failed
        assert not made.hung, f"did not stop on SIGTERM within 20 s: {made.hung}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def test_distributed_mode_refuses_sqlite(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        CALLFLEET_DATA_DIR=str(tmp_path),
        CALLFLEET_DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}",
        CALLFLEET_ENGINE="procrastinate",
    )
    serve = subprocess.run([str(BIN), "serve"], env=env, capture_output=True, timeout=60)
    assert serve.returncode == 2
    assert b"CALLFLEET_ENGINE" in serve.stderr and b"PostgreSQL" in serve.stderr
    env.pop("CALLFLEET_ENGINE")
    worker = subprocess.run([str(BIN), "worker"], env=env, capture_output=True, timeout=60)
    assert worker.returncode == 2
    assert b"needs PostgreSQL" in worker.stderr


def test_the_simulator_records_each_call_over_sip(cluster: Cluster, receiver: Receiver) -> None:
    cluster.simulator()
    key = cluster.new_key()
    api = cluster.serve(wait=False)
    cluster.worker("w1", concurrency=10, wait=False)
    cluster.ready()
    cluster.trunk_to_simulator(api, key)
    batch_id = cluster.submit(api, key, 30, refusing_every=5, batch_webhook=f"{receiver.url}/batch")
    cluster.wait_ended(batch_id, 30, timeout=60)
    verdict = check_batch(cluster, batch_id, 30, cap=20)
    wait_webhook_once(receiver)
    record = cluster.phone_record()
    assert verdict.sip_calls == len(record.ends) == 30  # one SIP call a number, each ended
    assert verdict.interrupted == 0
    assert verdict.statuses == {"completed": 24, "busy": 3, "declined": 3}, verdict
    answered = [e for e in record.ends.values() if e["status"] == 200]
    assert len(answered) == 24 and {e["ended_by"] for e in answered} == {"simulator"}
    assert verdict.slow == 0, f"answer to end took up to {verdict.slowest_s:.1f} s"
    # On SIGTERM the simulator writes its totals last.
    assert cluster.phones is not None
    cluster.kill(cluster.phones, signal.SIGTERM)
    summary = cluster.phone_record().summary
    assert summary is not None and cluster.phones.popen.returncode == 0
    assert (summary["invites"], summary["calls"], summary["rejected_over_capacity"]) == (
        30 + verdict.retransmitted,
        30,
        0,
    ), summary
    assert summary["max_concurrent_seen"] == verdict.sim_peak <= 20
    assert summary["final_responses"] == {"200": 24, "486": 3, "603": 3}


def test_stopping_a_batch_hangs_up_calls_live_on_a_worker(cluster: Cluster) -> None:
    # Heartbeats every 10 s: a quick hangup can only come from procrastinate's abort.
    cluster.env["CALLFLEET_LEASE_S"] = "30"
    cluster.simulator(hold_s=30)  # the phones would talk for 30 s
    key = cluster.new_key()
    api = cluster.serve(wait=False)
    cluster.worker("w1", concurrency=10, wait=False)
    cluster.ready()
    cluster.trunk_to_simulator(api, key)
    batch_id = cluster.submit(api, key, 6)
    wait_for(
        lambda: cluster.pg("SELECT count(*) FROM calls WHERE state = 'live'")[0][0] >= 4,
        timeout=30,
    )
    began = time.monotonic()
    stopped = httpx.post(
        f"{api.base}/v1/batches/{batch_id}/stop", headers={"authorization": key}, timeout=30
    )
    assert stopped.status_code == 200, stopped.text
    cluster.wait_ended(batch_id, 6, timeout=20)
    took = time.monotonic() - began
    assert took < 5, f"live calls took {took:.1f} s to hang up"
    # A job's status is written after its call's end: give the workers a moment.
    wait_for(
        lambda: (
            cluster.pg("SELECT count(*) FROM procrastinate_jobs WHERE status = 'aborted'")[0][0]
            >= 4
        ),
        timeout=10,
    )
    # Our side hung up: a BYE reached the phones for each answered call.
    ends = _settle(cluster, set(cluster.phone_record().ends) | _live_call_ids(cluster)).ends
    assert sum(1 for e in ends.values() if e["ended_by"] == "caller") >= 4


def test_sigterm_stops_a_worker_gracefully(cluster: Cluster) -> None:
    cluster.env["CALLFLEET_WORKER_SHUTDOWN_DEADLINE_S"] = "2"
    cluster.env["CALLFLEET_LEASE_S"] = "30"
    cluster.simulator(hold_s=30)  # the phones would talk for 30 s
    key = cluster.new_key()
    api = cluster.serve(wait=False)
    doomed = cluster.worker("w1", concurrency=10, wait=False)
    cluster.ready()
    cluster.trunk_to_simulator(api, key)
    batch_id = cluster.submit(api, key, 4)
    wait_for(
        lambda: cluster.pg("SELECT count(*) FROM calls WHERE state = 'live'")[0][0] == 4,
        timeout=30,
    )
    began = time.monotonic()
    doomed.popen.send_signal(signal.SIGTERM)
    doomed.popen.wait(timeout=30)
    took = time.monotonic() - began
    assert doomed.popen.returncode == 0
    assert 1.5 < took < 8, took
    rows = cluster.pg(
        "SELECT state, status, error_message FROM calls WHERE batch_id = %s", batch_id
    )
    assert [r[0] for r in rows] == ["ended"] * 4
    assert {r[2] for r in rows} == {SHUTDOWN_NOTE}
    assert {r[1] for r in rows} == {"completed"}
    ends = _settle(cluster, _live_call_ids(cluster)).ends
    assert [e["ended_by"] for e in ends.values()] == ["caller"] * 4  # our BYE, not theirs


def _live_call_ids(cluster: Cluster) -> set[str]:
    """SIP Call-IDs the simulator received, of calls it has not seen end (yet)."""
    return {c for ids in cluster.phone_record().call_ids_by_number().values() for c in ids}

"""Shared fixtures: real databases (SQLite file, PostgreSQL on 127.0.0.1:5432) and a
real callfleet server on a loopback port.

`database_url` is parametrised over both databases; every test that takes it (or
`server`) runs twice. PostgreSQL tests create their own database and drop it
afterwards; if PostgreSQL is not reachable they fail with a message saying so.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from callfleet.config import Settings
from callfleet.store.accounts import create_account, create_key
from callfleet.store.db import Database
from callfleet.store.migrate import migrate
from callfleet.telephony.carrier import Carrier
from callfleet.wiring import create_app

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"callfleet_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc}); start it with "
            "'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'"
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'callfleet.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    database = Database(settings.sqlalchemy_url)
    migrate(database)
    yield database
    database.dispose()


@dataclass
class Server:
    base_url: str
    db: Database
    settings: Settings

    def new_key(self, name: str = "test") -> str:
        with self.db.write() as conn:
            account = create_account(conn, name)
            return create_key(conn, account.id, name)

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"authorization": key} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)


def start_server(
    database_url: str, tmp_path: Path, carrier_impl: Carrier | None = None, **overrides: Any
) -> tuple[Server, uvicorn.Server, threading.Thread]:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "database_url": database_url,
        "simulator_time_scale": 0.0,
        # The dispatcher and API tests use the simulator's rules without SIP; the SIP
        # path has its own tests (test_trunks, test_simulator_sip, test_sip_*).
        "carrier": "simulator-nomedia",
        "webhook_allow_private": True,
        # The SIP peers (SIPp, the simulator) listen on loopback: the operator opens it.
        "trunk_allow": "127.0.0.0/8",
        "hopper_interval_s": 0.05,
        # A lab: calls at any hour to any number (tests/integration/test_reach.py sets
        # the operator's floor itself).
        "calling_hours": "off",
    }
    values.update(overrides)
    settings = Settings(**values)
    database = Database(settings.sqlalchemy_url)
    migrate(database)
    port = free_port()
    app = create_app(settings, db=database, carrier=carrier_impl)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return Server(f"http://127.0.0.1:{port}", database, settings), server, thread


@pytest.fixture
def server_factory(database_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[tuple[Server, uvicorn.Server, threading.Thread]] = []

    def make(carrier: Carrier | None = None, *, sip: bool = False, **overrides: Any) -> Server:
        """A server; `carrier` replaces the carrier, `sip=True` uses the real SIP one."""
        if sip:
            overrides["carrier"] = "sip"
        entry = start_server(database_url, tmp_path, carrier, **overrides)
        started.append(entry)
        return entry[0]

    yield make
    for srv, uv, thread in started:
        uv.should_exit = True
        thread.join(timeout=20)
        srv.db.dispose()


@pytest.fixture
def server(server_factory: Any) -> Server:
    srv: Server = server_factory()
    return srv


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3-compatible server (moto) on a loopback port, for the whole session."""
    from tests.support.s3_server import S3Server

    try:
        server = S3Server.start(tmp_path_factory.mktemp("moto") / "moto.log")
    except RuntimeError as exc:
        pytest.fail(f"could not start the S3 test server: {exc}")
    yield server
    server.stop()

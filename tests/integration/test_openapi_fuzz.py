"""Schema-driven fuzzing: every operation of `/openapi.json`, against the real app.

schemathesis generates requests from the published schema (bodies, query, path),
sends them to the ASGI app over a real SQLite database with a real API key (no
dispatcher: nothing is dialled), and checks each response: never a 5xx, a status
code the operation documents, the documented content type, and a body matching
the documented schema. Deterministic and bounded: a fixed derandomised run with a
few examples per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis import checks

from callfleet.config import Settings
from callfleet.store.accounts import create_account, create_key
from callfleet.store.db import Database
from callfleet.store.migrate import migrate
from callfleet.wiring import create_app

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"max-examples": 8, "deterministic": True, "database": "none"},
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database(f"sqlite:///{tmp_path / 'callfleet.db'}")
    migrate(db)
    yield db
    db.dispose()


@pytest.fixture
def api_key(database: Database) -> str:
    with database.write() as conn:
        account = create_account(conn, "fuzz")
        return create_key(conn, account.id, "fuzz")


SEED: list[tuple[str, dict[str, Any]]] = [
    ("/v1/trunks", {"name": "east", "host": "sip.example.net", "username": "u", "password": "p"}),
    ("/v1/numbers", {"phone_number": "+12125550100", "label": "main"}),
    ("/v1/dnc", {"phone_numbers": ["+12125550199"], "reason": "asked"}),
    ("/v1/calls", {"phone_number": "+12125550101", "task": "Hi", "metadata": {"k": 1}}),
    (
        "/v1/batches",
        {"base_prompt": "Hi {{name}}", "call_data": [{"phone_number": "2125550102", "name": "A"}]},
    ),
]


@pytest.fixture
def api(tmp_path: Path, database: Database, api_key: str) -> Any:
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'callfleet.db'}",
        carrier="simulator-nomedia",
        api_rate_limit="off",  # the fuzzer sends one key's requests as fast as it can
    )
    app = create_app(settings, dispatch=False, db=database)
    # Something in every list, so the fuzzer checks list items against their schemas too.
    with TestClient(app, headers={"authorization": api_key}) as client:
        for path, body in SEED:
            assert client.post(path, json=body).status_code == 200, path
    # The Server-Sent Events streams do not end while the client stays connected, and
    # the in-process client reads a body to its end: they are tested over a real
    # socket in test_events.py.
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG).exclude(
        path_regex=r"events$"
    )


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
def test_every_operation_answers_as_documented(case: schemathesis.Case, api_key: str) -> None:
    case.call_and_validate(headers={"authorization": api_key}, checks=CHECKS)

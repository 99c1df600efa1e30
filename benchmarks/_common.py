"""Shared pieces of the benchmarks: test numbers, batch bodies, servers, progress, output.

Not a benchmark itself (the leading underscore keeps it out of `benchmarks/*.py`
listings). Every script puts `benchmarks/` first on `sys.path` by being run as
`.venv/bin/python benchmarks/NAME.py`, so `import _common` finds this file.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from callfleet.config import Settings
from callfleet.domain.phones import _geographic_area_codes, normalize_phone
from callfleet.store.accounts import create_account, create_key
from callfleet.store.db import Database
from callfleet.store.migrate import migrate

console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)

PROMPT = (
    "You are calling {{business}} to renew their subscription to {{service}} before it "
    "expires on {{date}}. Be brief and polite."
)
SERVICES = ("Netflix", "Window Cleaning", "Cloud Backup", "Payroll", "Web Hosting", "Fleet GPS")
OPEN_WINDOW = {"start": "00:00", "end": "24:00"}


# --------------------------------------------------------------------------- numbers


def simulator_capacity() -> int:
    """How many distinct simulator numbers (+1 NPA 555-01XX) the normaliser accepts."""
    return len(_geographic_area_codes()) * 100


def phone_numbers(n: int) -> tuple[list[str], int]:
    """`n` distinct numbers that the API accepts; returns (numbers, how many are filler).

    First every simulator number `+1 NPA 555-0100..0199` over every geographic area
    code libphonenumber knows, XX varying fastest so any prefix of the list has the
    simulator's full outcome mix. There are only 442 such area codes, so at most
    44,200 simulator numbers exist; beyond that the list continues with
    `+1 NPA 555-0200..0999`, which the normaliser accepts as ordinary numbers and
    the simulator answers as "no phone here" (an instant SIP 404 failure: nothing
    is ever dialled, the simulated carrier has no network side).
    """
    codes = sorted(_geographic_area_codes())
    out: list[str] = []
    for code in codes:
        for xx in range(100):
            out.append(f"+1{code}55501{xx:02d}")
            if len(out) == n:
                return out, 0
    simulated = len(out)
    for line in range(200, 1000):
        for code in codes:
            number = f"+1{code}555{line:04d}"
            try:
                if normalize_phone(number) != number:
                    continue
            except ValueError:
                continue
            out.append(number)
            if len(out) == n:
                return out, n - simulated
    raise SystemExit(f"cannot make {n} distinct test numbers")


def make_rows(n: int) -> tuple[list[dict[str, Any]], int]:
    """`n` call_data rows: a unique number plus 3 properties the prompt uses."""
    numbers, filler = phone_numbers(n)
    rows = [
        {
            "phone_number": number,
            "business": f"Business {i}",
            "service": SERVICES[i % len(SERVICES)],
            "date": f"2027-{1 + i % 12:02d}-{1 + i % 28:02d}",
        }
        for i, number in enumerate(numbers)
    ]
    return rows, filler


def batch_body(rows: list[dict[str, Any]], *, open_window: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"base_prompt": PROMPT, "call_data": rows, "label": "benchmark"}
    if open_window:
        body["calling_window"] = OPEN_WINDOW
    return body


# --------------------------------------------------------------------------- databases


def sqlite_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": f"sqlite:///{data_dir / 'callfleet.db'}",
        "simulator_time_scale": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


def fresh_database(settings: Settings) -> Database:
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    return db


def new_account(db: Database, name: str = "bench") -> tuple[str, str]:
    """(account id, API key) of a new account."""
    with db.write() as conn:
        account = create_account(conn, name)
        key = create_key(conn, account.id, name)
    return account.id, key


@dataclass
class Accepted:
    batch_id: str
    count: int
    phases: dict[str, float]
    call_values: list[dict[str, Any]]
    schedule: dict[str, int]


def insert_batch_direct(
    db: Database, account_id: str, body: dict[str, Any], settings: Settings
) -> Accepted:
    """Accept a batch through the same functions `POST /v1/batches` calls, minus HTTP.

    Mirrors the `work()` closure of `send_batch` (shape check, batch-level fields,
    `prepare_calls`, the batch row, the call rows in chunks of 5,000) in one write
    transaction, and times each phase; returns the inserted call rows' values too.
    """
    from callfleet.api.routes.batches import _batch_fields
    from callfleet.api.submission import check_batch_shape, prepare_calls
    from callfleet.clock import utcnow
    from callfleet.store.ids import new_id
    from callfleet.store.tables import batches, calls

    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    with db.write() as conn:
        t = time.perf_counter()
        phases["BEGIN IMMEDIATE"] = t - t0
        errors = check_batch_shape(body, settings)
        if errors:
            raise SystemExit(f"bad benchmark body: {errors[:3]}")
        fields, _warnings = _batch_fields(body)
        phases["check_batch_shape + batch fields"] = time.perf_counter() - t
        now = utcnow()
        batch_id = new_id()
        t = time.perf_counter()
        prepared = prepare_calls(
            conn,
            account_id=account_id,
            settings=settings,
            base_prompt=body["base_prompt"],
            batch_fields=fields,
            rows=body["call_data"],
            now=now,
            batch_id=batch_id,
        )
        phases["prepare_calls"] = time.perf_counter() - t
        if prepared.rejected:
            raise SystemExit(f"{len(prepared.rejected)} rows rejected: {prepared.rejected[:2]}")
        t = time.perf_counter()
        conn.execute(
            sa.insert(batches).values(
                id=batch_id,
                account_id=account_id,
                label=body.get("label"),
                base_prompt=body["base_prompt"],
                call_params=fields,
                endpoint_code="api",
                status="running",
                test_mode=False,
                total_calls=len(prepared.rows),
                remaining=len(prepared.rows),
                created_at=now,
            )
        )
        rows = prepared.rows
        for start in range(0, len(rows), 5000):
            conn.execute(sa.insert(calls), [r.values for r in rows[start : start + 5000]])
        phases["INSERT calls (executemany, 5,000 a chunk)"] = time.perf_counter() - t
        t_commit = time.perf_counter()
    phases["COMMIT"] = time.perf_counter() - t_commit
    due = sum(1 for r in rows if r.values["not_before"] <= now)
    return Accepted(
        batch_id,
        len(rows),
        phases,
        [r.values for r in rows],
        {"dial_now": due, "waiting": len(rows) - due},
    )


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ThreadServer:
    base_url: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_thread_server(app: Any) -> ThreadServer:
    """Run `app` under uvicorn on a loopback port in a daemon thread (as tests/conftest.py)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True, name="uvicorn")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the benchmark server did not start")
        time.sleep(0.02)
    return ThreadServer(f"http://127.0.0.1:{port}", server, thread)


# --------------------------------------------------------------------------- timing


class CallTimer:
    """Wall time spent in some module-level functions, without a profiler's distortion.

    Replaces `module.name` by a timing wrapper for the duration of the `with` block,
    in this process only; a caller that looks the name up through the module (or,
    for a name imported with `from x import f`, through the importing module)
    is timed. Nested timed calls count in both. Not thread-safe: for functions
    that one thread runs.
    """

    def __init__(self, targets: Iterable[tuple[Any, str]]) -> None:
        self.targets = list(targets)
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.counts: Counter[str] = Counter()
        self._originals: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> CallTimer:
        for module, name in self.targets:
            original = getattr(module, name)
            self._originals.append((module, name, original))
            setattr(module, name, self._wrap(name, original))
        return self

    def __exit__(self, *exc: object) -> None:
        for module, name, original in reversed(self._originals):
            setattr(module, name, original)
        self._originals.clear()

    def _wrap(self, name: str, fn: Any) -> Any:
        seconds, counts, clock = self.seconds, self.counts, time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[name] += clock() - t
                counts[name] += 1

        return timed

    def rows(
        self, n: int, total: float, unit: str, of: str, rest: str | None = None
    ) -> list[tuple[str, str]]:
        out = []
        for name in sorted(self.seconds, key=self.seconds.__getitem__, reverse=True):
            sec, cnt = self.seconds[name], self.counts[name]
            out.append(
                (
                    f"  {name}",
                    f"{sec:6.2f} s {cnt:7,} x {1e6 * sec / cnt:8.1f} us "
                    f"= {1e6 * sec / n:7.1f} us/{unit} {100 * sec / total:3.0f} %{of}",
                )
            )
        if rest is not None:
            left = total - sum(self.seconds.values())
            out.append(
                (
                    f"  {rest}",
                    f"{left:6.2f} s {'':22}= {1e6 * left / n:7.1f} us/{unit} "
                    f"{100 * left / total:3.0f} %{of}",
                )
            )
        return out


# --------------------------------------------------------------------------- output


def quiet_logs() -> None:
    """Warnings and errors only: per-call debug lines would cost more than the calls."""
    from callfleet.logs import configure_logging

    configure_logging("warning")


def progress(transient: bool = True) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )


@contextlib.contextmanager
def step(description: str) -> Iterator[None]:
    """A spinner for a step that has no count."""
    with Progress(
        SpinnerColumn(),
        TextColumn(description),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as prog:
        prog.add_task(description, total=None)
        yield


def code_version() -> str:
    """The commit measured, and whether src/ had uncommitted changes (others edit it live)."""
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "log", "-1", "--format=%h %cd", "--date=format:%H:%M"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head}" + (f" + {len(dirty)} uncommitted paths under src/" if dirty else "")


def header(title: str, **facts: Any) -> None:
    console.rule(f"[bold]{title}")
    facts = {
        "code": code_version(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load average (1 min) at start": load_note(),
        "when (UTC)": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        **facts,
    }
    for key, value in facts.items():
        console.print(f"  {key}: {value}")


def load_note() -> str:
    """The 1-minute load average: above the CPU count, other work shared the CPUs."""
    one = os.getloadavg()[0]
    busy = " (other processes are competing for the CPUs: expect noisy times)"
    return f"{one:.2f}" + (busy if one > (os.cpu_count() or 1) * 0.75 else "")


def footer() -> None:
    console.print(f"  load average (1 min) at the end: {load_note()}")


def figures(title: str, rows: list[tuple[str, str]]) -> None:
    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def print_profile(stats: Any, limit: int = 15, title: str = "", sort: str = "cumulative") -> None:
    """cProfile/pstats top `limit` by `sort` (cumulative time), with paths shortened."""
    import io
    import pstats

    buf = io.StringIO()
    ps = pstats.Stats(stats, stream=buf) if not isinstance(stats, pstats.Stats) else stats
    ps.stream = buf  # type: ignore[attr-defined]
    ps.strip_dirs().sort_stats(sort).print_stats(limit)
    console.rule(title or "profile (top by cumulative time)")
    text = buf.getvalue()
    start = text.find("   ncalls")
    print(text[start:] if start >= 0 else text, flush=True)


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:,.1f} MB"


def sqlite_files_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def flush() -> None:
    sys.stdout.flush()

"""The `callfleet` command: serve, worker, simulator, demo, keys, migrate."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import sqlalchemy as sa
import typer
import uvicorn
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from callfleet import __version__
from callfleet.clock import utcnow
from callfleet.config import Settings
from callfleet.logs import configure_logging
from callfleet.store.accounts import (
    ApiKey,
    create_account,
    create_key,
    find_keys,
    get_account,
    list_keys,
    revoke_key,
)
from callfleet.store.db import Database
from callfleet.store.migrate import migrate
from callfleet.store.secrets import private_dir
from callfleet.store.views import iso

app = typer.Typer(help="callfleet: self-hosted AI phone calls in bulk.", no_args_is_help=True)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"callfleet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """callfleet: self-hosted AI phone calls in bulk."""


keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()
err = Console(stderr=True)


class SetupError(Exception):
    """A misconfiguration the command reports in one line (exit status 2)."""


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]callfleet:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(2)


def _settings(**overrides: Any) -> Settings:
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for e in exc.errors():
            name = "CALLFLEET_" + "_".join(str(p) for p in e["loc"]).upper()
            err.print(f"[red]Bad setting {name}:[/red] {e['msg']}")
        raise typer.Exit(2) from None
    try:
        private_dir(settings.data_dir)  # database, recordings, secret.key: owner-only
        probe = settings.data_dir / ".callfleet-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _fail(
            f"cannot write the data directory {settings.data_dir} ({exc.strerror or exc}); "
            "set CALLFLEET_DATA_DIR to a directory this user can write"
        ) from None
    return settings


def _database_problem(exc: sa.exc.DBAPIError, url: str) -> str | None:
    """One line for the database errors a misconfiguration causes, else None."""
    where = _redact(url)
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return (
            f"cannot use the database {where}: {detail}. Check CALLFLEET_DATABASE_URL "
            "(host, port, user, password, database name) and that the server is running"
        )
    if isinstance(exc, sa.exc.ProgrammingError) and "does not exist" in detail:
        return (
            f"the database {where} has no callfleet schema ({detail}); "
            "run `callfleet migrate` with the same CALLFLEET_DATABASE_URL first"
        )
    return None


def _check_database(settings: Settings, *, schema: bool) -> None:
    """Connect now (and with `schema`, check it is migrated) to fail in one line."""
    url = settings.sqlalchemy_url
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if schema and not sa.inspect(conn).has_table("alembic_version"):
                raise _fail(
                    f"the database {_redact(url)} has no callfleet schema; run "
                    "`callfleet migrate` with the same CALLFLEET_DATABASE_URL first"
                )
    except sa.exc.DBAPIError as exc:
        problem = _database_problem(exc, url)
        if problem is None:
            raise
        raise _fail(problem) from None
    finally:
        engine.dispose()


def _check_models(settings: Settings) -> None:
    """The offline models the configured providers load, present and intact."""
    from callfleet.agent.models import (
        PIPER_JOE,
        WHISPER_TINY_EN,
        ModelIntegrityError,
        ModelUnavailable,
        verified_path,
    )

    needed = []
    if settings.stt_provider == "whisper-local":
        needed.append(WHISPER_TINY_EN)
    if settings.tts_provider == "piper-local":
        needed.append(PIPER_JOE)
    for model in needed:
        try:
            verified_path(model)
        except (ModelUnavailable, ModelIntegrityError) as exc:
            raise _fail(str(exc)) from None


@app.command("migrate")
def migrate_cmd() -> None:
    """Create or upgrade the database schema."""
    settings = _settings()
    _check_database(settings, schema=False)
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    if not db.is_sqlite:  # procrastinate keeps its own schema, beside ours
        from callfleet.dispatch.procrastinate_engine import ensure_schema

        ensure_schema(db)
    db.dispose()
    console.print(f"Database is up to date: {_redact(settings.sqlalchemy_url)}")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name for the key, e.g. the client using it.")],
    account: Annotated[
        str | None, typer.Option(help="Add the key to this account id (default: a new account).")
    ] = None,
) -> None:
    """Create an API key; it is printed once, alone on the last line."""
    settings = _settings()
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    with db.write() as conn:
        if account is None:
            acct = create_account(conn, name)
            console.print(f"Created account {acct.id}")
        else:
            found = get_account(conn, account)
            if found is None:
                err.print(f"[red]No account {account!r}.[/red] Leave out --account to create one.")
                raise typer.Exit(2)
            acct = found
        key = create_key(conn, acct.id, name)
    db.dispose()
    console.print(f"API key for account {acct.id} (shown once; store it now):")
    typer.echo(key)


def _key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "account_id": key.account_id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
        "revoked_at": iso(key.revoked_at),
    }


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


@keys_app.command("list")
def keys_list(
    account: Annotated[str | None, typer.Option(help="Only this account's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the keys as JSON.")] = False,
) -> None:
    """List API keys (never the keys themselves): id, prefix, name, created, last used."""
    settings = _settings()
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    with db.read() as conn:
        keys = list_keys(conn, account)
    db.dispose()
    if as_json:
        typer.echo(json.dumps([_key_json(k) for k in keys], indent=2))
        return
    table = Table(title="API keys (times in UTC)")
    for column in ("id", "prefix"):  # never wrapped, so they can be copied
        table.add_column(column, no_wrap=True)
    for column in ("name", "account", "created", "last used", "revoked"):
        table.add_column(column)
    for k in keys:
        table.add_row(
            k.id,
            k.prefix,
            k.name,
            k.account_id,
            _when(k.created_at),
            _when(k.last_used_at) or "never",
            _when(k.revoked_at),
            style="dim" if k.revoked_at else None,
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, or its prefix, as `list` shows.")],
) -> None:
    """Revoke an API key: every API server refuses it (401) from now on."""
    settings = _settings()
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    with db.write() as conn:
        matches = find_keys(conn, key_id.strip())
        if len(matches) == 1:
            revoked = revoke_key(conn, matches[0].id, utcnow())
    db.dispose()
    if not matches:
        said = escape(repr(key_id))
        err.print(f"[red]No key {said}.[/red] See the ids with `callfleet keys list`.")
        raise typer.Exit(2)
    if len(matches) > 1:
        names = escape(", ".join(f"{k.id} ({k.prefix}, {k.name})" for k in matches))
        said = escape(repr(key_id))
        err.print(f"[red]{said} matches {len(matches)} keys:[/red] {names}. Give the id.")
        raise typer.Exit(2)
    state = "Revoked" if revoked else "Already revoked:"
    key = matches[0]
    console.print(escape(f"{state} key {key.id} ({key.prefix}, {key.name})"))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the API, the dispatcher and the webhook sender in one process."""
    from callfleet.wiring import create_app

    settings = _settings()
    _check_database(settings, schema=False)  # serve migrates it
    if settings.carrier != "simulator-nomedia":
        _check_models(settings)
    configure_logging(settings.log_level)
    console.print(
        f"callfleet on http://{host}:{port}  (docs: /docs)  database: "
        f"{_redact(settings.sqlalchemy_url)}"
    )
    if settings.carrier == "simulator-nomedia":
        console.print(
            "[yellow]Carrier: the phone simulator's rules, no SIP and no audio[/yellow] - "
            "nothing is dialled."
        )
    else:
        console.print(
            "Carrier: calls with a trunk (POST /v1/trunks) go out over SIP through it; "
            "[yellow]calls without one go to the built-in phone simulator[/yellow] "
            "(+1 NPA 555-01XX) over SIP on loopback, never to real numbers."
        )
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level)


DEMO_ROWS: list[dict[str, Any]] = [
    {
        "phone_number": "+12125550101",
        "business": "ABC Corp",
        "service": "Netflix",
        "date": "September 4th",
    },
    {
        "phone_number": "+14155550112",
        "business": "XYZ inc.",
        "service": "Window Cleaning",
        "date": "December 20th",
    },
    {
        "phone_number": "+13125550123",
        "business": "Lakeside Dental",
        "service": "Cloud Backup",
        "date": "January 9th",
    },
    {
        "phone_number": "+16175550145",
        "business": "Harbor Books",
        "service": "Point of Sale",
        "date": "March 1st",
    },
    {
        "phone_number": "+12065550162",
        "business": "Rainier Coffee",
        "service": "Payroll",
        "date": "May 15th",
    },
    {
        "phone_number": "+15125550177",
        "business": "Austin Bikes",
        "service": "Web Hosting",
        "date": "June 30th",
    },
    {
        "phone_number": "+13055550185",
        "business": "Miami Tiles",
        "service": "Insurance",
        "date": "July 4th",
    },
    {
        "phone_number": "+17135550193",
        "business": "Gulf Freight",
        "service": "Fleet GPS",
        "date": "August 8th",
    },
]
DEMO_PROMPT = (
    "You are calling {{business}} to renew their subscription to {{service}} before it "
    "expires on {{date}}."
)
# What the agent says on each call. With an LLM configured (CALLFLEET_LLM_BASE_URL)
# the prompt drives the conversation after the first sentence; without one the
# scripted policy says these lines turn by turn (and the call is labelled
# `model: "scripted"`).
DEMO_FIELDS: dict[str, Any] = {
    "first_sentence": (
        "Hi, this is Alex calling for {{business}} about your {{service}} subscription."
    ),
    "script": [
        "It expires on {{date}}. Would you like to renew it today?",
        "Great, I have noted that. You will get a confirmation by email.",
    ],
    "voicemail_action": "leave_message",
    "voicemail_message": (
        "Hi, this is Alex calling for {{business}}: your {{service}} subscription expires "
        "on {{date}}. Please call us back to renew it. Goodbye."
    ),
    "record": True,
    "answered_by_enabled": True,
    "max_duration": 2,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@app.command()
def demo(
    speed: Annotated[
        float,
        typer.Option(
            help="How much faster than real time the simulated phones ring (speech is "
            "always real time)."
        ),
    ] = 2.0,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the batch details as JSON on standard output (the report goes to "
            "standard error).",
        ),
    ] = False,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="Keep the server running after the batch, and print the dashboard's URL "
            "and a key to sign in with (Ctrl-C stops it).",
        ),
    ] = False,
) -> None:
    """Start callfleet and call the phone simulator's people: real SIP, RTP and the AI agent."""
    from callfleet.wiring import create_app

    scale = 1.0 / speed if speed > 0 else 0.0
    # The ring timeout is ours, not the phones': run it at the demo's speed too.
    overrides: dict[str, Any] = {
        "simulator_time_scale": scale,
        "ring_timeout_s": max(5.0, 30.0 * scale),
    }
    if "CALLFLEET_DATA_DIR" not in os.environ and "CALLFLEET_DATABASE_URL" not in os.environ:
        overrides["data_dir"] = Path.cwd() / ".callfleet-demo"
    settings = _settings(**overrides)
    _check_models(settings)
    configure_logging("warning")
    _prepare_voices(settings, err if as_json else console)
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    with db.write() as conn:
        acct = create_account(conn, "demo")
        key = create_key(conn, acct.id, "demo")
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, db=db), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"authorization": key}, timeout=30) as client:
            _wait_up(client, err if as_json else console)
            _run_demo(client, as_json, db, settings.storage_location)
        if keep:
            _keep_serving(thread, base, key, err if as_json else console)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        db.dispose()


def _prepare_voices(settings: Settings, out: Console) -> None:
    """Render what the demo's people may say now, not while their phones ring: the
    first time on a machine that is a few seconds of Piper per voice, which would
    otherwise hold up the first words of every call; after that the lines come
    from the data directory's cache (as they do for the server's simulator)."""
    from callfleet.simulator import voices
    from callfleet.simulator.rules import persona_for

    voices.use_cache_dir(settings.data_dir / "voices")
    by_voice: dict[str, list[str]] = {}
    for row in DEMO_ROWS:
        persona = persona_for(str(row["phone_number"]))
        by_voice.setdefault(persona.voice, []).extend(persona.texts)
    missing = sum(not voices.in_cache(t, v) for v, texts in by_voice.items() for t in texts)
    if not missing:
        return
    out.print(f"Rendering the simulated people's {missing} lines (once per machine)...")
    started = time.monotonic()
    for voice, texts in by_voice.items():
        voices.render_all(texts, voice)
    out.print(f"Done in {time.monotonic() - started:.0f} s ({voices.engine()}).")


def _keep_serving(thread: threading.Thread, base: str, key: str, out: Console) -> None:
    """`demo --keep`: leave the server up for the dashboard until Ctrl-C."""
    out.print(
        f"\nThe demo server keeps running. Dashboard: [bold]{base}/[/bold]\n"
        f"Sign in with this API key: [bold]{key}[/bold]\nPress Ctrl-C to stop."
    )
    try:
        while thread.is_alive():
            thread.join(timeout=1)
    except KeyboardInterrupt:
        out.print("Stopping the demo server.")


def _wait_up(client: httpx.Client, out: Console) -> None:
    """Until the server answers, then until it is ready: its agent's speech engines
    load and warm up first (a few seconds), and it places no call before."""
    for _ in range(100):
        try:
            if client.get("/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    else:
        raise RuntimeError("the demo server did not start")
    said = False
    for _ in range(1200):
        ready = client.get("/readyz")
        if ready.status_code == 200:
            return
        if not said:
            out.print(f"Waiting until the server is ready: {ready.json().get('reason')}")
            said = True
        time.sleep(0.1)
    raise RuntimeError(f"the demo server did not become ready: {ready.text}")


def _run_demo(client: httpx.Client, as_json: bool, db: Database, storage: str) -> None:
    body = {
        "base_prompt": DEMO_PROMPT,
        "call_data": DEMO_ROWS,
        "label": "callfleet demo",
        "calling_window": {"start": "00:00", "end": "24:00"},
        **DEMO_FIELDS,
    }
    sent = client.post("/v1/batches", json=body).json()
    if sent.get("status") != "success":
        err.print(f"[red]The demo batch was refused:[/red] {sent}")
        raise typer.Exit(1)
    batch_id = sent["batch_id"]
    total = sent["call_count"]
    if not as_json:
        console.print(
            f"Sent batch [bold]{batch_id}[/bold]: {total} calls to simulated phones "
            "(people, a voicemail box, a busy line, no answer, ...)."
        )
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err if as_json else console,
    ) as progress:
        task = progress.add_task("calls finished", total=total)
        while True:
            details = client.get(f"/v1/batches/{batch_id}").json()
            analysis = details["analysis"]
            done = analysis["completed_calls"]
            live = analysis["in_progress_calls"]
            progress.update(task, completed=done, description=f"calls finished ({live} live)")
            if done >= total:
                break
            time.sleep(0.5)
    calls_ = [client.get(f"/v1/calls/{c['call_id']}").json() for c in details["call_data"]]
    _print_demo(batch_id, calls_, details["analysis"], db, storage, err if as_json else console)
    if as_json:
        details["call_data"] = calls_
        typer.echo(json.dumps(details, indent=2))


def _print_demo(
    batch_id: str,
    calls_: list[dict[str, Any]],
    analysis: dict[str, Any],
    db: Database,
    storage: str,
    out: Console,
) -> None:
    """The batch for an 80-column terminal: a table of one line a call, each
    conversation as who said what, then where the recordings are and what to do next."""
    from callfleet.store.tables import calls as calls_table

    with db.read() as conn:
        rows = conn.execute(
            sa.select(calls_table.c.id, calls_table.c.recording_path).where(
                calls_table.c.batch_id == batch_id
            )
        ).all()
    paths: dict[str, str | None] = {row.id: row.recording_path for row in rows}
    out.print(_demo_table(batch_id, calls_))
    for call in calls_:
        turns = call.get("transcripts") or []
        if not turns and not call["error_message"]:
            continue
        business = _DEMO_BUSINESS.get(call["to"], "")
        out.rule(f"{call['to']} {business}: {call['status']}", align="left")
        said = Table.grid(padding=(0, 1))
        said.add_column(justify="right", no_wrap=True)
        said.add_column(overflow="fold")
        for turn in turns:
            who, colour = _SPEAKERS.get(turn["user"], (turn["user"], "dim"))
            said.add_row(f"[{colour}]{who}[/{colour}]", escape(turn["text"]))
        if call["error_message"]:
            said.add_row("[dim]note[/dim]", f"[dim]{escape(call['error_message'])}[/dim]")
        out.print(said)
        if paths.get(call["call_id"]):
            out.print(f"[dim]recording: {paths[call['call_id']]}[/dim]")
    batch_latency = analysis.get("latency_ms") or {}
    out.print()
    if batch_latency:
        out.print(
            f"Voice-to-voice latency: p50 {batch_latency['p50'] / 1000:.2f} s, "
            f"p95 {batch_latency['p95'] / 1000:.2f} s ({batch_latency['replies']} replies)."
        )
    out.print(
        "Every call went over SIP and RTP on loopback to the built-in phone simulator; "
        "the agent's STT, TTS and (when configured) LLM ran on this machine "
        f"(model: {calls_[0].get('model') or '-'})."
    )
    out.print("Recordings (stereo WAV, the person left, the agent right), in:")
    out.print(f"  {storage.removeprefix('file://')}", soft_wrap=True, highlight=False)
    out.print(_NEXT_STEPS, markup=False, highlight=False)


_SPEAKERS = {"assistant": ("agent", "cyan"), "user": ("person", "green")}
_DEMO_BUSINESS = {row["phone_number"]: str(row["business"]) for row in DEMO_ROWS}
_NEXT_STEPS = """
Next:
  1. Start the server:  callfleet serve --port 8000
  2. Create a key:      KEY=$(callfleet keys create --name me | tail -n1)
  3. Send a batch:
     curl -s http://127.0.0.1:8000/v1/batches -H "authorization: $KEY" \\
       -H 'content-type: application/json' -d '{"base_prompt": "Say hello.",
       "call_data": [{"phone_number": "+12125550101"}]}'
"""


def _demo_table(batch_id: str, calls_: list[dict[str, Any]]) -> Table:
    """One line a call in 80 columns: the number is never wrapped, the business is cut."""
    table = Table(title=f"Batch {batch_id}", box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("to", no_wrap=True)
    table.add_column("business", no_wrap=True, overflow="ellipsis", max_width=15)
    table.add_column("status", no_wrap=True)
    table.add_column("answered", no_wrap=True)
    table.add_column("secs", no_wrap=True, justify="right")
    table.add_column("p50", no_wrap=True, justify="right")
    for call in calls_:
        latency = call.get("latency_ms") or {}
        table.add_row(
            call["to"],
            _DEMO_BUSINESS.get(call["to"], ""),
            str(call["status"]),
            call["answered_by"] or "-",
            f"{call['call_length'] * 60:.0f}",
            f"{latency['p50'] / 1000:.2f}s" if latency.get("p50") else "-",
        )
    return table


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def simulator(ctx: typer.Context) -> None:
    """Run the phone simulator as a SIP trunk on loopback (--help for its options)."""
    from callfleet.simulator.__main__ import main as simulator_main

    raise typer.Exit(simulator_main(list(ctx.args)))


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


def main() -> None:
    try:
        app()
    except sa.exc.DBAPIError as exc:  # a command without its own check met the database
        problem = _database_problem(exc, Settings().sqlalchemy_url)
        if problem is None:
            raise
        err.print(f"[red]callfleet:[/red] {escape(problem)}", soft_wrap=True)
        raise SystemExit(2) from None


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(help="Live calls this worker carries at most (CALLFLEET_WORKER_CONCURRENCY)."),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve this worker's Prometheus metrics on this port.")
    ] = None,
) -> None:
    """Run calls for the hopper (CALLFLEET_ENGINE=procrastinate, PostgreSQL): any machine."""
    settings = _settings()
    configure_logging(settings.log_level)
    if settings.is_sqlite:
        err.print(
            "[red]callfleet worker needs PostgreSQL[/red]: set CALLFLEET_DATABASE_URL="
            "postgresql://USER@HOST:PORT/DB and CALLFLEET_ENGINE=procrastinate. With SQLite, "
            "`callfleet serve` runs calls itself."
        )
        raise typer.Exit(2)
    _check_database(settings, schema=True)
    if settings.carrier != "simulator-nomedia":
        _check_models(settings)
    from callfleet.wiring import build_worker
    from callfleet.worker import run_worker

    console.print(f"callfleet worker  database: {_redact(settings.sqlalchemy_url)}")
    run_worker(build_worker(settings, concurrency=concurrency, metrics_port=metrics_port))

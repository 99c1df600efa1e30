"""The `callfleet` command: serve, demo, keys, migrate."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import sqlalchemy as sa
import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from callfleet.config import Settings
from callfleet.logs import configure_logging
from callfleet.store.accounts import create_account, create_key, get_account
from callfleet.store.db import Database
from callfleet.store.migrate import migrate

app = typer.Typer(help="callfleet: self-hosted AI phone calls in bulk.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
console = Console()
err = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        for e in exc.errors():
            name = "CALLFLEET_" + "_".join(str(p) for p in e["loc"]).upper()
            err.print(f"[red]Bad setting {name}:[/red] {e['msg']}")
        raise typer.Exit(2) from None


@app.command("migrate")
def migrate_cmd() -> None:
    """Create or upgrade the database schema."""
    settings = _settings()
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


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the API, the dispatcher and the webhook sender in one process."""
    from callfleet.api.app import create_app

    settings = _settings()
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
        bool, typer.Option("--json", help="Print the batch details as JSON.")
    ] = False,
) -> None:
    """Start callfleet and call the phone simulator's people: real SIP, RTP and the AI agent."""
    from callfleet.api.app import create_app

    scale = 1.0 / speed if speed > 0 else 0.0
    # The ring timeout is ours, not the phones': run it at the demo's speed too.
    overrides: dict[str, Any] = {
        "simulator_time_scale": scale,
        "ring_timeout_s": max(5.0, 30.0 * scale),
    }
    if "CALLFLEET_DATA_DIR" not in os.environ and "CALLFLEET_DATABASE_URL" not in os.environ:
        overrides["data_dir"] = Path.cwd() / ".callfleet-demo"
    settings = _settings(**overrides)
    configure_logging("warning")
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
            _wait_up(client)
            _run_demo(client, as_json, db)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        db.dispose()


def _wait_up(client: httpx.Client) -> None:
    for _ in range(100):
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the demo server did not start")


def _run_demo(client: httpx.Client, as_json: bool, db: Database) -> None:
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
    if as_json:
        details["call_data"] = calls_
        typer.echo(json.dumps(details, indent=2))
        return
    _print_demo(batch_id, calls_, details["analysis"], db)


def _print_demo(
    batch_id: str, calls_: list[dict[str, Any]], analysis: dict[str, Any], db: Database
) -> None:
    from callfleet.store.tables import calls as calls_table

    with db.read() as conn:
        rows = conn.execute(
            sa.select(calls_table.c.id, calls_table.c.recording_path).where(
                calls_table.c.batch_id == batch_id
            )
        ).all()
    paths: dict[str, str | None] = {row.id: row.recording_path for row in rows}
    by_number = {row["phone_number"]: row for row in DEMO_ROWS}
    table = Table(title=f"Batch {batch_id}")
    for col in ("to", "business", "status", "answered_by", "length (s)", "latency p50"):
        table.add_column(col)
    for call in calls_:
        latency = call.get("latency_ms") or {}
        table.add_row(
            call["to"],
            str(by_number.get(call["to"], {}).get("business", "")),
            str(call["status"]),
            call["answered_by"] or "-",
            f"{call['call_length'] * 60:.0f}",
            f"{latency['p50'] / 1000:.2f} s" if latency.get("p50") else "-",
        )
    console.print(table)
    for call in calls_:
        turns = call.get("transcripts") or []
        if not turns and not call["error_message"]:
            continue
        console.rule(f"{call['to']}  {call['status']}  (model: {call.get('model') or '-'})")
        for turn in turns:
            colour = {"assistant": "cyan", "user": "green"}.get(turn["user"], "dim")
            console.print(f"[{colour}]{turn['user']:>9}[/{colour}]  {turn['text']}")
        if call["error_message"]:
            console.print(f"[dim]    note  {call['error_message']}[/dim]")
        if paths.get(call["call_id"]):
            console.print(f"[dim]recording  {paths[call['call_id']]}[/dim]")
    batch_latency = analysis.get("latency_ms") or {}
    if batch_latency:
        console.print(
            f"Voice-to-voice latency over the batch: p50 {batch_latency['p50'] / 1000:.2f} s, "
            f"p95 {batch_latency['p95'] / 1000:.2f} s ({batch_latency['replies']} replies)."
        )
    console.print(
        "Every call went over SIP and RTP on loopback to the built-in phone simulator "
        "(see the README's test-number table); the agent's STT, TTS and (when configured) "
        "LLM ran on this machine."
    )


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
    app()


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
    from callfleet.worker import run_worker

    console.print(f"callfleet worker  database: {_redact(settings.sqlalchemy_url)}")
    run_worker(settings, concurrency, metrics_port)

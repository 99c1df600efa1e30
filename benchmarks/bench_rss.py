"""Peak memory of `callfleet serve` while it accepts and runs a 100,000-call batch.

`callfleet serve` runs as a subprocess with its own data directory (SQLite), instant
simulated calls and raised caps (CALLFLEET_SIMULATOR_TIME_SCALE=0,
CALLFLEET_ACCOUNT_CONCURRENCY=1000, CALLFLEET_DEFAULT_CPS=100000). The benchmark
creates a key with `callfleet keys create --name bench`, measures the idle server's
RSS, sends one batch with calling_window 00:00-24:00, and samples the server's RSS
(psutil) every 0.2 s until `GET /v1/batches/{id}?include_calls=false` reports every
call completed. Figures: peak RSS, and its ratio to the idle RSS of the same run.

The wait for completion stops after `--timeout` seconds (the script should finish in
about five minutes); the figures are then marked INCOMPLETE and include how far the
batch got. Use `--timeout 0` to wait as long as it takes.

    .venv/bin/python benchmarks/bench_rss.py [--rows N] [--timeout S] [--poll S]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]

import _common as c


class RssSampler(threading.Thread):
    """RSS of a process and its children every `interval` s, with a phase label."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int, str]] = []
        self.phase = "idle"
        self._halt = threading.Event()

    def rss(self) -> int:
        total = int(self.proc.memory_info().rss)
        for child in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total

    def run(self) -> None:
        t0 = time.monotonic()
        while not self._halt.is_set():
            with contextlib.suppress(psutil.Error):
                self.samples.append((time.monotonic() - t0, self.rss(), self.phase))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def peak(self, phase: str | None = None) -> int:
        return max((r for _, r, p in self.samples if phase is None or p == phase), default=0)


def callfleet_bin() -> str:
    path = Path(sys.executable).parent / "callfleet"
    if not path.exists():
        raise SystemExit(f"{path} not found: install the package into this venv first")
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="calls in the batch")
    parser.add_argument(
        "--timeout",
        type=float,
        default=240.0,
        help="stop waiting for completion after S seconds (0: never)",
    )
    parser.add_argument(
        "--carrier",
        choices=("nomedia", "default"),
        default="nomedia",
        help="nomedia: CALLFLEET_CARRIER=simulator-nomedia, the simulator's instant outcomes "
        "without SIP or audio (default); default: whatever `serve` uses unless told (since "
        "534f029, SIP and RTP to the built-in SIP phone simulator)",
    )
    parser.add_argument(
        "--poll", type=float, default=5.0, help="seconds between GET /v1/batches/{id} polls"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    n = args.rows
    c.header(
        "bench_rss: peak RSS of `callfleet serve` running one batch",
        rows=f"{n:,}",
        poll=f"every {args.poll:g} s",
        timeout=f"{args.timeout:g} s" if args.timeout else "-",
    )

    tmp = tempfile.mkdtemp(prefix="callfleet-bench-rss-")
    data_dir = Path(tmp)
    env = {
        **os.environ,
        "CALLFLEET_DATA_DIR": str(data_dir),
        "CALLFLEET_SIMULATOR_TIME_SCALE": "0",
        "CALLFLEET_ACCOUNT_CONCURRENCY": "1000",
        "CALLFLEET_DEFAULT_CPS": "100000",
    }
    env.pop("CALLFLEET_DATABASE_URL", None)
    env.pop("CALLFLEET_CARRIER", None)
    carrier_note = "serve's default"
    if args.carrier == "nomedia":
        from typing import get_args

        from callfleet.config import Settings

        if "simulator-nomedia" in get_args(Settings.model_fields["carrier"].annotation):
            env["CALLFLEET_CARRIER"] = "simulator-nomedia"
            carrier_note = "CALLFLEET_CARRIER=simulator-nomedia"
        else:
            carrier_note = "serve's default (this version has no simulator-nomedia setting)"
    c.console.print(f"  carrier: {carrier_note}")
    exe = callfleet_bin()

    with c.step("callfleet keys create --name bench"):
        out = subprocess.run(
            [exe, "keys", "create", "--name", "bench"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        key = out.stdout.strip().splitlines()[-1].strip()

    with c.step("generating rows"):
        rows, filler = c.make_rows(n)
        payload = json.dumps(c.batch_body(rows, open_window=True)).encode()
        del rows
    c.console.print(
        f"  body: {c.mb(len(payload))} JSON; {n - filler:,} simulator numbers"
        + (
            f" + {filler:,} filler numbers that the simulator fails at once with 404 "
            f"(its range holds only {c.simulator_capacity():,})"
            if filler
            else ""
        )
    )

    port = c.free_port()
    log_path = data_dir / "serve.log"
    log = log_path.open("wb")
    server = subprocess.Popen(
        [exe, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    sampler: RssSampler | None = None
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"authorization": key}, timeout=900) as client:
            with c.step("waiting for the server"):
                deadline = time.monotonic() + 60
                while True:
                    if server.poll() is not None:
                        raise SystemExit(f"callfleet serve exited: see {log_path}")
                    with contextlib.suppress(httpx.TransportError):
                        if client.get("/healthz").status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise SystemExit("callfleet serve did not answer within 60 s")
                    time.sleep(0.1)
            sampler = RssSampler(server.pid, 0.2)
            sampler.start()
            with c.step("measuring the idle server for 3 s"):
                time.sleep(3.0)
            idle = [r for _, r, p in sampler.samples if p == "idle"]
            idle_rss = statistics.median(idle)

            sampler.phase = "accept"
            with c.step(f"POST /v1/batches with {n:,} rows"):
                t0 = time.perf_counter()
                resp = client.post(
                    "/v1/batches",
                    content=payload,
                    headers={"content-type": "application/json"},
                )
                t_accept = time.perf_counter() - t0
            del payload
            if resp.status_code != 200:
                raise SystemExit(f"batch refused: {resp.status_code} {resp.text[:500]}")
            batch_id = resp.json()["batch_id"]
            total = resp.json()["call_count"]

            sampler.phase = "dispatch"
            completed = 0
            poll_times: list[float] = []
            t_done = None
            with c.progress() as prog:
                task = prog.add_task("calls completed", total=total)
                while True:
                    tp = time.perf_counter()
                    details = client.get(
                        f"/v1/batches/{batch_id}", params={"include_calls": "false"}
                    ).json()
                    poll_times.append(time.perf_counter() - tp)
                    completed = details["analysis"]["completed_calls"]
                    prog.update(task, completed=completed)
                    if completed >= total:
                        t_done = time.perf_counter() - t0
                        break
                    if args.timeout and time.perf_counter() - t0 - t_accept > args.timeout:
                        break
                    if server.poll() is not None:
                        raise SystemExit(f"callfleet serve exited: see {log_path}")
                    time.sleep(args.poll)
            t_waited = time.perf_counter() - t0 - t_accept
            sampler.phase = "after"
            time.sleep(1.0)
        sampler.stop()
    finally:
        if sampler is not None:
            sampler.stop()
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()

    peak = sampler.peak()
    at_peak = max(sampler.samples, key=lambda s: s[1])
    rows_out = [
        ("idle server RSS (median over 3 s)", f"{c.mb(idle_rss):>10}   1.00x"),
        (
            "peak RSS while accepting (POST in flight)",
            f"{c.mb(sampler.peak('accept')):>10}   {sampler.peak('accept') / idle_rss:.2f}x",
        ),
        (
            "peak RSS while dispatching",
            f"{c.mb(sampler.peak('dispatch')):>10}   {sampler.peak('dispatch') / idle_rss:.2f}x",
        ),
        (
            "peak RSS overall",
            f"{c.mb(peak):>10}   {peak / idle_rss:.2f}x   (at {at_peak[0]:.1f} s, {at_peak[2]})",
        ),
        (
            "RSS 1 s after the end",
            f"{c.mb(sampler.samples[-1][1]):>10}   {sampler.samples[-1][1] / idle_rss:.2f}x",
        ),
        ("RSS samples", f"{len(sampler.samples):,} (every 0.2 s)"),
        ("accept (POST) time", f"{t_accept:.1f} s"),
    ]
    if t_done is not None:
        rows_out.append(
            (
                "all calls completed after",
                f"{t_done:.1f} s from the POST ({total / (t_done - t_accept):,.0f} "
                f"calls/s after the accept)",
            )
        )
    else:
        rate = completed / t_waited if t_waited > 0 else 0
        left = (total - completed) / rate if rate else float("inf")
        rows_out.append(
            (
                "[red]INCOMPLETE[/red]",
                f"{completed:,} of {total:,} completed {t_waited:.0f} s after the accept "
                f"({rate:,.0f} calls/s; ~{left:.0f} s more to go); peak so far",
            )
        )
    rows_out.append(
        (
            "GET /v1/batches/{id}?include_calls=false",
            f"{len(poll_times)} polls, median {statistics.median(poll_times):.2f} s, "
            f"max {max(poll_times):.2f} s",
        )
    )
    c.figures(
        f"\n`callfleet serve` with one {total:,}-call batch (ratio = RSS / idle RSS)", rows_out
    )
    c.console.print(f"  target (from the brief, not asserted): peak RSS < 500 MB -> {c.mb(peak)}")
    c.footer()
    warnings = [
        ln
        for ln in log_path.read_text(errors="replace").splitlines()
        if "level='warning'" in ln or "level='error'" in ln or "Traceback" in ln
    ]
    if warnings:
        c.console.print(
            f"  server log: {len(warnings)} warning/error lines, first: {warnings[0][:200]}"
        )
    if args.keep:
        c.console.print(f"  data directory kept: {data_dir}")
    else:
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

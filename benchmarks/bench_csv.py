"""Peak memory of the API while it accepts a 100,000-row batch as a CSV upload.

A fresh server (`create_app(dispatch=False)` under uvicorn, SQLite, in a subprocess
so its RSS is its own) takes `POST /v1/batches` as `multipart/form-data` with a CSV
file of `--rows` rows (a unique number plus three properties the prompt uses). A
second fresh server takes the same rows as the JSON body, for comparison. The
server's RSS is sampled every 0.1 s (psutil); figures: idle RSS, peak RSS, the peak's
growth over idle, and the time to the answer.

    .venv/bin/python benchmarks/bench_csv.py [--rows N]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import _common as c
from bench_rss import RssSampler

SERVER = """
import sys, uvicorn
from callfleet.config import Settings
from callfleet.wiring import create_app
from callfleet.store.db import Database
settings = Settings(data_dir=sys.argv[1], database_url=f"sqlite:///{sys.argv[1]}/callfleet.db",
                    api_rate_limit="off", max_body_bytes=512 * 1024 * 1024)
app = create_app(settings, dispatch=False, db=Database(settings.sqlalchemy_url))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def run(kind: str, rows: list[dict[str, str]]) -> tuple[int, int, float]:
    """(idle RSS, peak RSS, seconds) of one fresh server taking the batch as `kind`."""
    with tempfile.TemporaryDirectory(prefix="bench-csv-") as tmp:
        settings = c.sqlite_settings(Path(tmp))
        db = c.fresh_database(settings)
        _, key = c.new_account(db)
        db.dispose()
        port = c.free_port()
        proc = subprocess.Popen([sys.executable, "-c", SERVER, tmp, str(port)])
        try:
            base = f"http://127.0.0.1:{port}"
            c_wait(base)
            sampler = RssSampler(proc.pid, interval=0.1)
            sampler.start()
            time.sleep(0.5)
            idle = sampler.peak()
            body = c.batch_body(rows, open_window=False)
            with httpx.Client(base_url=base, headers={"authorization": key}, timeout=600) as hc:
                if kind == "csv":
                    data = csv_bytes(rows)
                    del body["call_data"]
                    started = time.monotonic()
                    r = hc.post(
                        "/v1/batches",
                        files={"file": ("calls.csv", data, "text/csv")},
                        data={"batch": json.dumps(body)},
                    )
                else:
                    raw = json.dumps(body).encode()
                    started = time.monotonic()
                    r = hc.post(
                        "/v1/batches", content=raw, headers={"content-type": "application/json"}
                    )
                took = time.monotonic() - started
            r.raise_for_status()
            assert r.json()["call_count"] == len(rows), r.text[:500]
            time.sleep(0.3)
            sampler.stop()
            return idle, sampler.peak(), took
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def c_wait(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/healthz", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("the benchmark server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    c.quiet_logs()
    c.header("CSV upload: peak RSS", rows=args.rows)
    rows, _ = c.make_rows(args.rows)
    size = len(csv_bytes(rows))
    figures = [("CSV file", c.mb(size))]
    for kind in ("csv", "json"):
        idle, peak, took = run(kind, rows)
        figures += [
            (f"{kind}: idle RSS", c.mb(idle)),
            (f"{kind}: peak RSS", c.mb(peak)),
            (f"{kind}: peak - idle", f"{c.mb(peak - idle)} ({(peak - idle) / size:.1f}x the file)"),
            (f"{kind}: accepted in", f"{took:.1f} s"),
        ]
    c.figures("figures", figures)
    c.footer()


if __name__ == "__main__":
    main()

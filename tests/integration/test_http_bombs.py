"""Decompression bombs from a tenant's `dynamic_data` or tool server, over real HTTP.

A real HTTP server on 127.0.0.1 answers with a few kilobytes that decode to hundreds
of megabytes (`Content-Encoding: gzip, gzip`, `deflate, deflate`, one `gzip` layer).
The agent's fetch runs in a fresh Python process (so its peak RSS is its own) and must
stay within `MAX_GROWTH_MB` of where it started, the source failing as a failed tool
does, or at most 64 KB of it kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

MAX_GROWTH_MB = 50
DECODED_MB = 400


def _compress(chunks: Iterator[bytes], wbits: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    out = [packer.compress(chunk) for chunk in chunks]
    out.append(packer.flush())
    return b"".join(out)


def _zeros(total: int) -> Iterator[bytes]:
    block = b"\0" * (1 << 20)
    for _ in range(total >> 20):
        yield block


GZIP, ZLIB = zlib.MAX_WBITS | 16, zlib.MAX_WBITS


def _bomb(encoding: str) -> bytes:
    body_size = DECODED_MB << 20
    if encoding == "gzip, gzip":
        return _compress(iter([_compress(_zeros(body_size), GZIP)]), GZIP)
    if encoding == "deflate, deflate":
        return _compress(iter([_compress(_zeros(body_size), ZLIB)]), ZLIB)
    if encoding == "gzip":
        return _compress(_zeros(body_size), GZIP)
    raise AssertionError(encoding)


@pytest.fixture
def bomb_server() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"encoding": "gzip", "body": b""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-encoding", state["encoding"])
            self.send_header("content-length", str(len(state["body"])))
            self.end_headers()
            self.wfile.write(state["body"])

        def log_message(self, *_args: Any) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/lead"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


FETCH = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    from callfleet.agent.dynamic_data import DynamicData
    from callfleet.domain.tools import parse_dynamic_data

    sources, problems = parse_dynamic_data(
        [{"url": sys.argv[1], "response_data": [{"name": "status", "data": "$.status"}]}]
    )
    assert not problems, problems
    data = DynamicData(sources, {}, allow_private=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    asyncio.run(data.load(budget_s=20))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_kb": after - before, "peak_kb": after,
                      "failures": data.failures, "values": data.values}))
    """
)


@pytest.mark.parametrize("encoding", ["gzip, gzip", "deflate, deflate", "gzip"])
def test_a_decompression_bomb_stays_within_the_read_cap(
    bomb_server: dict[str, Any], encoding: str
) -> None:
    bomb_server["encoding"] = encoding
    bomb_server["body"] = _bomb(encoding)
    assert len(bomb_server["body"]) < 1 << 20  # a small answer ...
    done = subprocess.run(
        [sys.executable, "-c", FETCH, bomb_server["url"]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    growth_mb = report["growth_kb"] / 1024
    print(
        f"{encoding}: {len(bomb_server['body'])} bytes sent, peak RSS "
        f"{report['peak_kb'] / 1024:.0f} MB, growth {growth_mb:.1f} MB; {report['failures']}"
    )
    assert growth_mb < MAX_GROWTH_MB  # ... that must not become hundreds of MB
    assert report["values"] == {}
    assert report["failures"], "the source should fail as a failed tool does"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "gzip, deflate"])
def test_an_honest_compressed_answer_is_still_read(
    bomb_server: dict[str, Any], encoding: str
) -> None:
    body = b'{"status": "warm lead"}'
    for coding in [e.strip() for e in encoding.split(",")]:
        body = _compress(iter([body]), GZIP if coding == "gzip" else ZLIB)
    bomb_server["encoding"], bomb_server["body"] = encoding, body
    done = subprocess.run(
        [sys.executable, "-c", FETCH, bomb_server["url"]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["values"] == {"status": "warm lead"}, report

"""A real S3-compatible server on loopback for the storage tests: moto in server mode.

`S3Server.start()` runs `moto_server` as a subprocess on a free loopback port, waits
until it answers, and fails loudly (with its output) if it cannot. `env()` gives the
standard AWS variables that point boto3 (ours, and any subprocess) at it, and
`make_bucket` creates a bucket through the S3 API itself.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["S3Server"]

MOTO = [sys.executable, "-m", "moto.server"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    buckets: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, log: Path) -> S3Server:
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                f"moto's server is missing ({exc}): pip install 'moto[server]'"
            ) from exc
        port = _free_port()
        handle = log.open("wb")
        proc = subprocess.Popen(
            [*MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=handle, stderr=subprocess.STDOUT
        )
        handle.close()
        server = cls(port, proc, log)
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited ({proc.returncode}):\n{log.read_text()}")
            try:
                if httpx.get(server.endpoint, timeout=1).status_code < 500:
                    return server
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"moto_server did not answer in 30 s:\n{log.read_text()}")
            time.sleep(0.1)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }

    def make_bucket(self) -> str:
        import boto3

        name = f"callfleet-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

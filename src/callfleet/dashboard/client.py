"""The dashboard's only way to the data: the public HTTP API, called in-process.

Each request builds an `Api` with the signed-in user's key; it sends real HTTP
requests through `httpx.ASGITransport` to the same FastAPI app, so every rule of
the API (auth, tenancy, validation, the error envelope) applies to the dashboard.
`httpx.ASGITransport` collects a whole response body before it answers, so a large
download (a batch's export) goes through `Api.stream` instead: the same ASGI call,
its body handed on chunk by chunk through a small bounded queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.types import ASGIApp

__all__ = ["Api", "ApiFailure", "NotSignedIn", "Streamed"]

BASE_URL = "http://callfleet.internal"
STREAM_CHUNKS = 8
"""Body chunks a streamed response may hold before the API waits for the browser."""


@dataclass
class Streamed:
    """A response whose body arrives as the API sends it."""

    status_code: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]


class NotSignedIn(Exception):
    """The API answered 401: no session, or the key was revoked."""


class ApiFailure(Exception):
    """The API answered 4xx/5xx (other than 401); `message` is its envelope's."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        self.message = str(body.get("message") or body.get("detail") or f"HTTP {status}")
        super().__init__(self.message)


class Api:
    def __init__(self, app: ASGIApp, key: str) -> None:
        self._app = app
        self._key = key

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=self._app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url=BASE_URL,
            headers={"authorization": self._key},
            timeout=120,
        ) as client:
            yield client

    async def request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[int, dict[str, Any]]:
        """Status and JSON body; raises `NotSignedIn` on 401."""
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        async with self._client() as client:
            response = await client.request(method, path, params=clean, **kw)
        if response.status_code == 401:
            raise NotSignedIn()
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:500]}
        return response.status_code, body if isinstance(body, dict) else {"data": body}

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        status, body = await self.request("GET", path, params=params)
        if status >= 400:
            raise ApiFailure(status, body)
        return body

    async def post(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        status, body = await self.request("POST", path, json=payload or {})
        if status >= 400:
            raise ApiFailure(status, body)
        return body

    async def delete(self, path: str) -> dict[str, Any]:
        status, body = await self.request("DELETE", path)
        if status >= 400:
            raise ApiFailure(status, body)
        return body

    async def stream(self, path: str) -> Streamed:
        """GET `path` with its body streamed (raises `NotSignedIn` on 401)."""
        target = urlsplit(path)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": target.path,
            "raw_path": target.path.encode(),
            "query_string": target.query.encode(),
            "root_path": "",
            "headers": [(b"host", b"callfleet.internal"), (b"authorization", self._key.encode())],
            "server": ("callfleet.internal", 80),
            "client": ("127.0.0.1", 123),
        }
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(STREAM_CHUNKS)
        started: asyncio.Future[tuple[int, dict[str, str]]] = (
            asyncio.get_running_loop().create_future()
        )
        done = asyncio.Event()
        asked = False

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:  # the request: a GET, no body
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()  # then the "browser" stays until the body is read
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
                started.set_result((int(message["status"]), headers))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    await queue.put(bytes(message["body"]))
                if not message.get("more_body", False):
                    await queue.put(None)

        async def run() -> None:
            try:
                await self._app(scope, receive, send)
            finally:
                if not started.done():
                    started.set_result((500, {}))
                    await queue.put(b"The API failed before it answered.")
                await queue.put(None)

        task = asyncio.create_task(run())
        status, headers = await started
        if status == 401:
            done.set()
            task.cancel()
            raise NotSignedIn()

        async def body() -> AsyncIterator[bytes]:
            try:
                while (chunk := await queue.get()) is not None:
                    yield chunk
            finally:
                done.set()
                task.cancel()

        return Streamed(status, headers, body())

    async def raw(self, path: str, headers: dict[str, str]) -> httpx.Response:
        """The undecoded response (the recording), for proxying."""
        async with self._client() as client:
            response = await client.get(path, headers=headers)
        if response.status_code == 401:
            raise NotSignedIn()
        return response

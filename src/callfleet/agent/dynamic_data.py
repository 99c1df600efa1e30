"""Outside data a call's fields ask the agent to fetch: `dynamic_data`, and the HTTP side of tools.

A call's `dynamic_data` is a list of HTTP requests made when the call is answered,
before the agent speaks:

    {"url": "https://crm.example.com/leads?phone={{to}}", "method": "GET",
     "headers": {"authorization": "Bearer ..."}, "query": {...}, "body": {...},
     "cache": true,
     "response_data": [{"name": "lead_status", "data": "$.lead.status",
                        "context": "the lead's status in our CRM"}]}

Each `response_data` entry picks a value out of the JSON answer by a dotted path
(`$.a.b[0].c`, `a.b.0.c`); its `name` becomes a variable the prompt can use
(`{{lead_status}}`) and a line of the agent's instructions, with its `context`
(a `context` with placeholders, "Status: {{lead_status}}", is the line itself).
`cache: false` sources are fetched again before the LLM's turns (at most every
`REFRESH_EVERY_S`), so the instructions follow data that changes during the call.
A source that fails leaves its names unset; the call goes on.

The shapes are parsed, without I/O, in `callfleet.domain.tools` (the API checks
them there before a call is queued; the names are re-exported here); this module
makes the requests. The same request shape (`HttpRequestSpec`) serves the custom
tools in `callfleet.agent.tools`. `{{var}}` in the URL, header values, query values and
body strings is filled from the call's variables (and a tool's arguments); a
body string that is exactly one placeholder takes the value with its JSON type.
Every request goes through the webhooks' SSRF guard (`resolve_and_check`, the
same policy as webhooks: loopback and private targets only with
`CALLFLEET_WEBHOOK_ALLOW_PRIVATE=true`, metadata addresses never), connects to
the checked address, follows no redirects and reads at most 64 KB.

That cap holds after decoding: the body is read raw and `gzip`/`deflate` layers are
undone here, incrementally, each asked for no more than the cap (httpx would inflate
a whole chunk at once: 800 bytes of `gzip, gzip` became 500 MB). A plain answer is cut
at the cap; a compressed one that decodes past it (a decompression bomb's signature),
or one in an encoding we did not ask for, fails like a refused request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import zlib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import quote

import httpx
import structlog

from callfleet.domain.templating import fill, placeholders
from callfleet.domain.tools import (
    DynamicDataSource,
    HttpRequestSpec,
    ResponseField,
    parse_dynamic_data,
    parse_request,
    variable_names,
)
from callfleet.net.ssrf import WebhookTargetError, resolve_and_check

__all__ = [
    "LOAD_BUDGET_S",
    "MAX_RESPONSE_BYTES",
    "REFRESH_EVERY_S",
    "DynamicData",
    "DynamicDataSource",
    "HttpRequestSpec",
    "OutboundError",
    "ResponseField",
    "extract",
    "fill",
    "parse_dynamic_data",
    "parse_request",
    "send",
    "variable_names",
]

log = structlog.get_logger(__name__)

MAX_RESPONSE_BYTES: Final = 64 * 1024
LOAD_BUDGET_S: Final = 3.0
"""All `dynamic_data` sources together, before the agent's first words."""
REFRESH_EVERY_S: Final = 10.0
"""`cache: false` sources are fetched again at most this often."""
_PATH_PART = re.compile(r"[^.\[\]]+|\[(\d+)\]")


class OutboundError(Exception):
    """A request the call's fields describe could not be made or answered."""


# -- templates and answers ----------------------------------------------------------------


def _fill_json(value: Any, values: Mapping[str, object]) -> Any:
    if isinstance(value, str):
        names = placeholders(value)
        if len(names) == 1 and value.strip() in (f"{{{{{names[0]}}}}}", f"{{{names[0]}}}"):
            return values.get(names[0])  # a lone placeholder keeps its value's JSON type
        return fill(value, values)
    if isinstance(value, list):
        return [_fill_json(v, values) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _fill_json(v, values) for k, v in value.items()}
    return value


def extract(data: Any, path: str) -> Any:
    """The value at a dotted path (`$.a.b[0]`, `a.b.0`) in decoded JSON; None if absent."""
    path = path.strip()
    path = path[1:] if path.startswith("$") else path
    current = data
    for match in _PATH_PART.finditer(path):
        key = match.group(1) if match.group(1) is not None else match.group(0)
        if isinstance(current, Mapping):
            current = current.get(key)
        elif isinstance(current, list) and key.isdigit() and int(key) < len(current):
            current = current[int(key)]
        else:
            return None
        if current is None:
            return None
    return current


# -- sending --------------------------------------------------------------------------------


async def send(
    spec: HttpRequestSpec,
    values: Mapping[str, object],
    *,
    allow_private: bool,
    client: httpx.AsyncClient | None = None,
) -> Any:
    """Make the request with `values` filled in; the decoded JSON answer (or its text).

    Raises `OutboundError` saying what went wrong: a refused or malformed target,
    no answer within the spec's timeout, a non-2xx status, a network error.
    """
    url_values = {k: quote(_as_text(v), safe="") for k, v in values.items()}
    url = fill(spec.url, url_values)
    try:
        addresses = await resolve_and_check(url, allow_private=allow_private)
    except WebhookTargetError as exc:
        raise OutboundError(str(exc).replace("webhook ", "")) from exc
    headers = {name: fill(value, values) for name, value in spec.headers}
    headers["connection"] = "close"
    headers["accept-encoding"] = ACCEPT_ENCODING  # what _read_capped can decode
    query = {name: fill(value, values) for name, value in spec.query}
    body = _fill_json(spec.body, values) if spec.body is not None else None
    parsed = httpx.URL(url)
    host = parsed.raw_host.decode("ascii")
    address = addresses[0]
    target = parsed if host == address or "%" in address else parsed.copy_with(host=address)
    if target is not parsed:  # send to the checked address, under the URL's own name
        headers["host"] = parsed.netloc.decode("ascii")
    extensions = {"sni_hostname": host} if parsed.scheme == "https" and target is not parsed else {}
    owned = client is None
    client = client or httpx.AsyncClient(trust_env=False, follow_redirects=False)
    try:
        async with asyncio.timeout(spec.timeout_s):
            async with client.stream(
                spec.method,
                target,
                headers=headers,
                params=query or None,
                json=body if spec.method != "GET" else None,
                extensions=extensions,
                timeout=spec.timeout_s,
            ) as response:
                content = await _read_capped(response, host)
    except (TimeoutError, httpx.TimeoutException) as exc:
        raise OutboundError(f"no answer from {host} within {spec.timeout_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise OutboundError(f"{host}: {type(exc).__name__}: {exc}") from exc
    finally:
        if owned:
            await client.aclose()
    if not 200 <= response.status_code < 300:
        raise OutboundError(f"{host} answered HTTP {response.status_code}")
    text = content.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


ACCEPT_ENCODING: Final = "gzip, deflate"
_INFLATE_STEP: Final = 16 * 1024


class _Inflater:
    """One `gzip` or `deflate` layer, pulled a bounded amount at a time."""

    def __init__(self, source: _Inflater | _Bytes, encoding: str) -> None:
        self.source = source
        self.encoding = encoding
        self._unpack: Any = None

    def _start(self, first: bytes) -> Any:
        if self.encoding == "gzip":
            return zlib.decompressobj(zlib.MAX_WBITS | 16)
        # "deflate" is zlib-wrapped by the RFC, but some servers send it raw.
        wrapped = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)

    def read(self, limit: int) -> bytes:
        """Up to `limit` decoded bytes; b"" at the end."""
        out = bytearray()
        while len(out) < limit:
            data = self._unpack.unconsumed_tail if self._unpack is not None else b""
            if not data:
                data = self.source.read(_INFLATE_STEP)
                if self._unpack is None:
                    if not data:
                        break
                    self._unpack = self._start(data)
            piece = self._unpack.decompress(data, limit - len(out))
            if not piece and not data and not self._unpack.unconsumed_tail:
                break  # the input is spent and nothing more comes out
            out += piece
        return bytes(out)


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def read(self, limit: int) -> bytes:
        piece, self._data = bytes(self._data[:limit]), self._data[limit:]
        return piece


def _decode_capped(raw: bytes, encodings: list[str], host: str) -> bytes:
    """`raw` with its content codings undone, or `OutboundError` past the cap."""
    source: _Inflater | _Bytes = _Bytes(raw)
    for encoding in reversed(encodings):  # the last coding listed was applied last
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise OutboundError(f"{host} answered in an encoding we did not ask for: {encoding}")
        source = _Inflater(source, "deflate" if encoding == "deflate" else "gzip")
    try:
        body = source.read(MAX_RESPONSE_BYTES + 1)
    except zlib.error as exc:
        raise OutboundError(f"{host} sent an undecodable {', '.join(encodings)} body") from exc
    if len(body) > MAX_RESPONSE_BYTES:
        raise OutboundError(f"{host}'s answer is larger than {MAX_RESPONSE_BYTES // 1024} KB")
    return body


async def _read_capped(response: httpx.Response, host: str) -> bytes:
    """The body, decoded: a plain one cut at `MAX_RESPONSE_BYTES`, a compressed one
    decoding past it an `OutboundError`."""
    received = bytearray()
    # aiter_raw: httpx must not inflate; _decode_capped does, within the cap. The raw
    # body needs no more than the cap (compressed data is not larger than its text).
    raw = cast(AsyncGenerator[bytes, None], response.aiter_raw())
    async with contextlib.aclosing(raw) as chunks:
        async for chunk in chunks:
            received += chunk
            if len(received) > MAX_RESPONSE_BYTES:
                break
    codings = response.headers.get("content-encoding", "")
    encodings = [e.strip().lower() for e in codings.split(",") if e.strip()]
    encodings = [e for e in encodings if e != "identity"]
    if not encodings:  # plain text is cut at the cap, as it always was
        return bytes(received[:MAX_RESPONSE_BYTES])
    return _decode_capped(bytes(received), encodings, host)


# -- a call's dynamic data -------------------------------------------------------------------


@dataclass
class DynamicData:
    """The values a call's `dynamic_data` sources provide, and when to fetch them again."""

    sources: tuple[DynamicDataSource, ...]
    variables: Mapping[str, object]
    """The call's own variables, for the requests' placeholders."""
    allow_private: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _fetched_at: float = 0.0

    @property
    def live(self) -> bool:
        """Some source is not cached: worth fetching again during the call."""
        return any(not source.cache for source in self.sources)

    async def load(self, budget_s: float = LOAD_BUDGET_S) -> None:
        """Fetch every source at once, within `budget_s` in all; failures are kept in `failures`."""
        await self._fetch(self.sources, budget_s)

    async def refresh(self, budget_s: float = 2.0) -> bool:
        """Fetch the uncached sources again if the last fetch is old; True if a value changed."""
        if not self.live or time.monotonic() - self._fetched_at < REFRESH_EVERY_S:
            return False
        before = dict(self.values)
        await self._fetch(tuple(s for s in self.sources if not s.cache), budget_s)
        return self.values != before

    async def _fetch(self, sources: tuple[DynamicDataSource, ...], budget_s: float) -> None:
        self._fetched_at = time.monotonic()
        if not sources:
            return
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
            tasks = [
                asyncio.create_task(
                    send(s.request, self.variables, allow_private=self.allow_private, client=client)
                )
                for s in sources
            ]
            done, pending = await asyncio.wait(tasks, timeout=budget_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for source, task in zip(sources, tasks, strict=True):
            where = source.request.url.split("//", 1)[-1].split("/", 1)[0].split("?", 1)[0]
            if task in pending:
                self.failures.append(f"{where}: no answer within {budget_s:g} s")
            elif task.exception() is not None:
                self.failures.append(str(task.exception()))
            else:
                answer = task.result()
                for wanted in source.request.response_data:
                    value = extract(answer, wanted.data)
                    if value is not None:
                        self.values[wanted.name] = value

    def _texts(self) -> dict[str, str]:
        return {
            name: (value if isinstance(value, str) else json.dumps(value))[:500]
            for name, value in self.values.items()
        }

    def instructions(self) -> str:
        """The fetched values as lines for the agent's instructions."""
        lines = []
        for source in self.sources:
            for wanted in source.request.response_data:
                if wanted.name not in self.values:
                    continue
                if placeholders(wanted.context):  # a sentence of its own: "Info: {{info}}"
                    lines.append(f"- {fill(wanted.context, self._texts())}")
                    continue
                about = f" ({wanted.context})" if wanted.context else ""
                lines.append(f"- {wanted.name}{about}: {self._texts()[wanted.name]}")
        return "Live data for this call:\n" + "\n".join(lines) if lines else ""

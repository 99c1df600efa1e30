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

The same request shape (`HttpRequestSpec`) serves the custom tools in
`callfleet.agent.tools`. `{{var}}` in the URL, header values, query values and
body strings is filled from the call's variables (and a tool's arguments); a
body string that is exactly one placeholder takes the value with its JSON type.
Every request goes through the webhooks' SSRF guard (`resolve_and_check`, the
same policy as webhooks: loopback and private targets only with
`CALLFLEET_WEBHOOK_ALLOW_PRIVATE=true`, metadata addresses never), connects to
the checked address, follows no redirects and reads at most 64 KB.

This module does not import pipecat: the API validates these fields with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast
from urllib.parse import quote

import httpx

from callfleet.domain.templating import placeholders, render
from callfleet.webhooks.ssrf import WebhookTargetError, check_url_syntax, resolve_and_check

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

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES: Final = 64 * 1024
LOAD_BUDGET_S: Final = 3.0
"""All `dynamic_data` sources together, before the agent's first words."""
REFRESH_EVERY_S: Final = 10.0
"""`cache: false` sources are fetched again at most this often."""
DEFAULT_TIMEOUT_S: Final = 10.0
MAX_TIMEOUT_S: Final = 30.0
METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
_PATH_PART = re.compile(r"[^.\[\]]+|\[(\d+)\]")


class OutboundError(Exception):
    """A request the call's fields describe could not be made or answered."""


@dataclass(frozen=True)
class ResponseField:
    """A value picked out of a JSON answer: `data` is its path, `name` what it is called."""

    name: str
    data: str
    context: str = ""


@dataclass(frozen=True)
class HttpRequestSpec:
    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    body: Any = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    response_data: tuple[ResponseField, ...] = ()


@dataclass(frozen=True)
class DynamicDataSource:
    request: HttpRequestSpec
    cache: bool = True
    """False: fetched again during the call (see `REFRESH_EVERY_S`)."""


# -- parsing ------------------------------------------------------------------------------


def _pairs(
    value: object, where: str, problems: list[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        problems.append((where, "must be an object of names to values"))
        return ()
    return tuple((str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in value.items())


def _response_fields(
    value: object, where: str, problems: list[tuple[str, str]]
) -> tuple[ResponseField, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append((where, "must be an array of {name, data, context}"))
        return ()
    out: list[ResponseField] = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping) or not item.get("name") or not item.get("data"):
            problems.append((f"{where}[{i}]", "needs a 'name' and a 'data' path"))
            continue
        out.append(
            ResponseField(str(item["name"]), str(item["data"]), str(item.get("context") or ""))
        )
    return tuple(out)


def parse_request(
    value: Mapping[str, Any], where: str, problems: list[tuple[str, str]]
) -> HttpRequestSpec | None:
    """One request from its JSON shape; what is wrong with it goes to `problems` as (path, why)."""
    before = len(problems)
    url = value.get("url")
    if not isinstance(url, str) or not url:
        problems.append((f"{where}.url", "is required: the http(s) URL to call"))
    else:
        try:  # placeholders may stand for anything, so check the URL with them blanked
            check_url_syntax(fill(url, {}, default="x"))
        except WebhookTargetError as exc:
            problems.append((f"{where}.url", str(exc).replace("webhook URL", "URL")))
    method = str(value.get("method") or "GET").upper()
    if method not in METHODS:
        problems.append((f"{where}.method", f"must be one of {', '.join(METHODS)}"))
    timeout_s = DEFAULT_TIMEOUT_S
    timeout_ms = value.get("timeout_ms", value.get("timeout"))
    if timeout_ms is not None:
        if (
            isinstance(timeout_ms, bool)
            or not isinstance(timeout_ms, int | float)
            or timeout_ms <= 0
        ):
            problems.append((f"{where}.timeout_ms", "must be a positive number of milliseconds"))
        else:
            timeout_s = min(MAX_TIMEOUT_S, float(timeout_ms) / 1000.0)
    headers = _pairs(value.get("headers"), f"{where}.headers", problems)
    query = _pairs(value.get("query"), f"{where}.query", problems)
    fields = _response_fields(value.get("response_data"), f"{where}.response_data", problems)
    if len(problems) > before:
        return None
    return HttpRequestSpec(
        url=str(url), method=method, headers=headers, query=query, body=value.get("body"),
        timeout_s=timeout_s, response_data=fields,
    )  # fmt: skip


def parse_dynamic_data(value: object, where: str = "dynamic_data") -> tuple[
    tuple[DynamicDataSource, ...], list[tuple[str, str]]
]:  # fmt: skip
    """The sources of a call's `dynamic_data`, and the problems of the ones left out."""
    problems: list[tuple[str, str]] = []
    if value is None:
        return (), problems
    if not isinstance(value, list):
        return (), [(where, "must be an array of requests")]
    sources: list[DynamicDataSource] = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            problems.append((f"{where}[{i}]", "must be an object with a 'url'"))
            continue
        request = parse_request(item, f"{where}[{i}]", problems)
        if request is not None:
            sources.append(DynamicDataSource(request, cache=item.get("cache") is not False))
    return tuple(sources), problems


def variable_names(value: object) -> list[str]:
    """The variables a call's `dynamic_data` will provide, once fetched.

    Submission renders the prompt when a call is queued; these placeholders must be
    left in it for the agent to fill (`{{name}}` stays as written).
    """
    sources, _ = parse_dynamic_data(value)
    return list(dict.fromkeys(f.name for s in sources for f in s.request.response_data))


# -- templates and answers ----------------------------------------------------------------


def fill(template: str, values: Mapping[str, object], *, default: str | None = "") -> str:
    """`template` with `{{name}}` filled from `values`; a missing name becomes `default`,
    or stays as written (`{{name}}`) when `default` is None."""
    names = placeholders(template)
    if not names:
        return template
    filled = {
        n: values[n] if n in values else ("{{" + n + "}}" if default is None else default)
        for n in names
    }
    return render(template, filled)


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
                spec.method, target, headers=headers, params=query or None,
                json=body if spec.method != "GET" else None, extensions=extensions,
                timeout=spec.timeout_s,
            ) as response:  # fmt: skip
                content = await _read_capped(response)
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


async def _read_capped(response: httpx.Response) -> bytes:
    received = bytearray()
    raw = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
    async with contextlib.aclosing(raw) as chunks:
        async for chunk in chunks:
            received += chunk
            if len(received) >= MAX_RESPONSE_BYTES:
                break
    return bytes(received[:MAX_RESPONSE_BYTES])


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

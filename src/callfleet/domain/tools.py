"""The outside requests a call's fields describe: `dynamic_data` sources and custom `tools`.

Parsing only, no I/O: the API checks a call's `tools` and `dynamic_data` with these
functions before the call is queued (naming the entry at fault), and the agent acts
on what they return (`callfleet.agent.dynamic_data` sends the requests through the
outbound address guard). The shapes:

    dynamic_data: [{"url": "https://crm.example.com/leads?phone={{to}}", "method": "GET",
                    "headers": {...}, "query": {...}, "body": {...}, "cache": true,
                    "timeout_ms": 3000,
                    "response_data": [{"name": "lead_status", "data": "$.lead.status",
                                       "context": "the lead's status in our CRM"}]}]
    tools: [{"name": "order_status", "description": "when the caller asks about an order",
             "url": "...", "method": "POST", "input_schema": {...}, "speech": "One moment.",
             "response_data": [...]}]

A problem is reported as (path, why), the path relative to the field
(`tools[2].name`), so the API can prefix it with the row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .templating import fill
from .urls import WebhookTargetError, check_url_syntax

__all__ = [
    "BUILT_IN_TOOLS",
    "DEFAULT_TIMEOUT_S",
    "MAX_TIMEOUT_S",
    "METHODS",
    "DynamicDataSource",
    "HttpRequestSpec",
    "HttpTool",
    "ResponseField",
    "late_bound_names",
    "parse_dynamic_data",
    "parse_request",
    "parse_tools",
    "variable_names",
]

DEFAULT_TIMEOUT_S: Final = 10.0
MAX_TIMEOUT_S: Final = 30.0
METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
BUILT_IN_TOOLS = ("end_call", "opt_out", "transfer_call")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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
        url=str(url),
        method=method,
        headers=headers,
        query=query,
        body=value.get("body"),
        timeout_s=timeout_s,
        response_data=fields,
    )


def parse_dynamic_data(
    value: object, where: str = "dynamic_data"
) -> tuple[tuple[DynamicDataSource, ...], list[tuple[str, str]]]:
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


@dataclass(frozen=True)
class HttpTool:
    """A custom tool from the call's `tools`: the LLM calls it, callfleet makes the request."""

    name: str
    description: str
    request: HttpRequestSpec
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    """JSON schema of the arguments (an object schema); `{}` takes none."""
    speech: str | None = None
    """Said while the request runs ("Let me check that.")."""


def parse_tools(
    value: object, where: str = "tools", *, url_required: bool = True
) -> tuple[tuple[HttpTool, ...], list[tuple[str, str]]]:
    """The custom tools of a call's `tools`, and (path, problem) for those left out.

    With `url_required=False` (the API's check) a tool without a `url` is no problem,
    though the agent cannot use it: the official SDK's `CustomTool` type has no `url`
    field, so its users send one only as an extra field.
    """
    problems: list[tuple[str, str]] = []
    if value is None:
        return (), problems
    if not isinstance(value, list):
        return (), [(where, "must be an array of tool objects")]
    tools: list[HttpTool] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(item, str):
            problems.append(
                (
                    at,
                    f"{item!r} is a stored tool id; callfleet takes tools inline, "
                    "as objects {name, description, url, method, input_schema, ...}",
                )
            )
            continue
        if not isinstance(item, Mapping):
            problems.append((at, "must be an object {name, description, url, ...}"))
            continue
        before = len(problems)
        name = str(item.get("name") or "")
        if not _TOOL_NAME.match(name):
            problems.append((f"{at}.name", "is required: 1-64 letters, digits, '_' or '-'"))
        elif name in BUILT_IN_TOOLS or name in seen:
            problems.append((f"{at}.name", f"{name!r} is taken (built in, or used twice)"))
        description = item.get("description")
        if not isinstance(description, str) or not description.strip():
            problems.append((f"{at}.description", "is required: when the agent should use it"))
        schema = item.get("input_schema", item.get("parameters")) or {}
        if not _is_object_schema(schema):
            problems.append((f"{at}.input_schema", "must be a JSON schema of type 'object'"))
        speech = item.get("speech")
        if speech is not None and not isinstance(speech, str):
            problems.append((f"{at}.speech", "must be a string"))
        if not item.get("url") and not url_required:
            continue
        request = parse_request(item, at, problems)
        if len(problems) > before or request is None:
            continue
        seen.add(name)
        tools.append(HttpTool(name, str(description), request, dict(schema), speech or None))
    return tuple(tools), problems


def _is_object_schema(schema: object) -> bool:
    """An `input_schema` the LLM can be given: `{}` or a JSON schema of type `object`."""
    if not isinstance(schema, Mapping):
        return False
    if not schema:
        return True
    return schema.get("type", "object") == "object" and isinstance(
        schema.get("properties", {}), Mapping
    )


def variable_names(value: object) -> list[str]:
    """The variables a call's `dynamic_data` will provide, once fetched.

    Submission renders the prompt when a call is queued; these placeholders must be
    left in it for the agent to fill (`{{name}}` stays as written).
    """
    sources, _ = parse_dynamic_data(value)
    return list(dict.fromkeys(f.name for s in sources for f in s.request.response_data))


def late_bound_names(params: Mapping[str, Any]) -> list[str]:
    """Placeholders the agent fills during the call, not when the call is queued: the
    `response_data` names of its `dynamic_data` and of its tools. Submission should
    leave `{{name}}` as written for these instead of calling them missing."""
    names = variable_names(params.get("dynamic_data"))
    for tool in parse_tools(params.get("tools"))[0]:
        names.extend(f.name for f in tool.request.response_data)
    return list(dict.fromkeys(names))

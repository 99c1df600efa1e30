"""Tool and `dynamic_data` shapes, their templating and extraction, the HTTP requests they
make (against a real server on 127.0.0.1), the tool schemas offered, and the API's checks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from callfleet.agent.dynamic_data import DynamicData, OutboundError, extract, send
from callfleet.agent.options import AgentOptions
from callfleet.agent.tools import CallTools
from callfleet.api.call_fields import check_fields
from callfleet.domain.conversation import transfer_numbers
from callfleet.domain.templating import fill
from callfleet.domain.tools import (
    HttpRequestSpec,
    ResponseField,
    late_bound_names,
    parse_dynamic_data,
    parse_tools,
    variable_names,
)

TOOL = {
    "name": "check_order",
    "description": "Look up an order.",
    "url": "https://shop.example.com/orders/{{order_id}}",
    "method": "post",
    "headers": {"x-key": "{{key}}"},
    "query": {"v": 2},
    "body": {"id": "{{order_id}}"},
    "input_schema": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
    "speech": "One moment.",
    "timeout_ms": 90_000,
    "response_data": [{"name": "status", "data": "$.status", "context": "order status"}],
}


def test_parse_tools_reads_the_inline_shape() -> None:
    [tool], problems = parse_tools([TOOL])
    assert problems == []
    assert (tool.name, tool.description, tool.speech) == (
        "check_order",
        "Look up an order.",
        "One moment.",
    )
    request = tool.request
    assert request.method == "POST" and request.url.endswith("/orders/{{order_id}}")
    assert request.headers == (("x-key", "{{key}}"),) and request.query == (("v", "2"),)
    assert request.timeout_s == 30.0  # capped
    assert request.response_data == (ResponseField("status", "$.status", "order status"),)
    assert tool.input_schema["required"] == ["order_id"]


def test_parse_tools_names_what_is_wrong() -> None:
    tools, problems = parse_tools(
        [
            "TL-1234",
            {**TOOL, "name": "end_call"},
            {**TOOL, "url": "ftp://x/y", "method": "TRACE"},
            {**TOOL, "name": "has space", "description": ""},
            {**TOOL, "input_schema": {"type": "string"}},
            TOOL,
            TOOL,
        ]
    )
    assert [t.name for t in tools] == ["check_order"]
    where = [w for w, _ in problems]
    assert where == [
        "tools[0]",
        "tools[1].name",
        "tools[2].url",
        "tools[2].method",
        "tools[3].name",
        "tools[3].description",
        "tools[4].input_schema",
        "tools[6].name",
    ]
    assert "stored tool id" in problems[0][1]
    assert parse_tools({"a": 1}) == ((), [("tools", "must be an array of tool objects")])


def test_parse_dynamic_data_and_transfer_numbers() -> None:
    sources, problems = parse_dynamic_data(
        [
            {
                "url": "https://crm.example.com/lead",
                "cache": False,
                "response_data": [{"name": "s", "data": "a.b"}],
            },
            {"url": "https://crm.example.com/x", "method": None, "headers": None, "cache": None},
            {"method": "GET"},
            {"url": "https://x.example.com", "response_data": [{"name": "n"}]},
        ]
    )
    assert [s.cache for s in sources] == [False, True]
    assert sources[1].request.method == "GET"
    assert [w for w, _ in problems] == ["dynamic_data[2].url", "dynamic_data[3].response_data[0]"]
    both_names = [
        {"url": "https://a.example", "response_data": [{"name": "a", "data": "x"}]},
        {
            "url": "https://b.example",
            "response_data": [{"name": "b", "data": "y"}, {"name": "a", "data": "z"}],
        },
    ]
    assert variable_names(both_names) == ["a", "b"]
    assert late_bound_names({"dynamic_data": both_names, "tools": [TOOL]}) == ["a", "b", "status"]
    assert transfer_numbers({"transfer_phone_number": "+15550001111"}) == {
        "default": "+15550001111"
    }
    both = {"transfer_phone_number": "+1", "transfer_list": {"default": "+2", "sales": "+3"}}
    assert transfer_numbers(both) == {"default": "+2", "sales": "+3"}


def test_options_from_params_with_tools_and_data() -> None:
    options = AgentOptions.from_params(
        {
            "task": "t",
            "request_data": {"name": "Dana"},
            "phone_number": "+15550001234",
            "tools": [TOOL, "TL-1"],
            "dynamic_data": [{"url": "https://a.example.com"}, 7],
            "transfer_list": {"sales": "+15550002222"},
            "something_new": {"x": 1},
        }
    )
    assert [t.name for t in options.tools] == ["check_order"]
    assert len(options.dynamic_data) == 1
    assert options.transfer_numbers == {"sales": "+15550002222"}
    assert options.variables == {"name": "Dana", "phone_number": "+15550001234"}
    dialled = AgentOptions.from_params({"call_id": "c1", "to": "+15550001234", "from": "+44207"})
    assert dialled.variables == {
        "call_id": "c1",
        "to": "+15550001234",
        "from": "+44207",
        "short_to": "5550001234",
        "short_from": "+44207",
    }


def test_fill_and_extract() -> None:
    assert fill("Hi {{ name }}, {{missing}}!", {"name": "Dana"}) == "Hi Dana, !"
    assert fill("Hi {{name}}, {{missing}}", {"name": "Dana"}, default=None) == (
        "Hi Dana, {{missing}}"
    )
    data = {"result": {"items": [{"id": 1}, {"id": 2}], "ok": False}}
    assert extract(data, "$.result.items[1].id") == 2
    assert extract(data, "result.items.0.id") == 1
    assert extract(data, "$.result.ok") is False
    assert extract(data, "$.result.nope.deeper") is None
    assert extract([5, 6], "$[1]") == 6


@asynccontextmanager
async def serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_send_fills_the_request_and_enforces_the_guard_timeout_and_status() -> None:
    got: list[tuple[str, str, dict[str, str], bytes]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        got.append(
            (request.method, str(request.rel_url), dict(request.headers), await request.read())
        )
        if request.path == "/slow":
            await asyncio.sleep(1)
        if request.path == "/bad":
            return web.Response(status=503)
        if request.path == "/big":
            return web.Response(text="x" * 200_000)
        return web.json_response({"status": "shipped"})

    async def main() -> None:
        async with serve(handler) as base:
            spec = HttpRequestSpec(
                url=base + "/orders/{{order_id}}",
                method="POST",
                headers=(("x-key", "k-{{key}}"),),
                query=(("q", "{{order_id}}"),),
                body={"id": "{{order_id}}", "n": "{{count}}", "text": "n={{count}}"},
            )
            values = {"order_id": "A/1", "key": "s3", "count": 3}
            answer = await send(spec, values, allow_private=True)
            assert answer == {"status": "shipped"}
            method, url, headers, body = got[0]
            assert method == "POST" and url == "/orders/A%2F1?q=A%2F1"
            assert headers["x-key"] == "k-s3"
            assert json.loads(body) == {"id": "A/1", "n": 3, "text": "n=3"}

            with pytest.raises(OutboundError, match="loopback"):
                await send(spec, values, allow_private=False)
            assert len(got) == 1  # refused before any connection
            with pytest.raises(OutboundError, match="within 0.3 s"):
                await send(HttpRequestSpec(base + "/slow", timeout_s=0.3), {}, allow_private=True)
            with pytest.raises(OutboundError, match="HTTP 503"):
                await send(HttpRequestSpec(base + "/bad"), {}, allow_private=True)
            big = await send(HttpRequestSpec(base + "/big"), {}, allow_private=True)
            assert isinstance(big, str) and len(big) == 64 * 1024

    asyncio.run(main())


def test_dynamic_data_loads_within_its_budget_and_lists_values() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/slow":
            await asyncio.sleep(1.5)
        return web.json_response({"lead": {"status": "warm", "tags": ["a"]}})

    async def main() -> DynamicData:
        async with serve(handler) as base:
            sources, _ = parse_dynamic_data(
                [
                    {
                        "url": base + "/lead",
                        "response_data": [
                            {"name": "status", "data": "lead.status", "context": "lead status"},
                            {"name": "tags", "data": "lead.tags"},
                            {
                                "name": "said",
                                "data": "lead.status",
                                "context": "The lead is {{said}}.",
                            },
                            {"name": "absent", "data": "lead.nothing"},
                        ],
                    },
                    {"url": base + "/slow", "response_data": [{"name": "x", "data": "x"}]},
                ]
            )
            dynamic = DynamicData(sources, {}, allow_private=True)
            started = asyncio.get_running_loop().time()
            await dynamic.load(budget_s=0.5)
            assert asyncio.get_running_loop().time() - started < 1.5
            return dynamic

    dynamic = asyncio.run(main())
    assert dynamic.values == {"status": "warm", "tags": ["a"], "said": "warm"}
    host = dynamic.sources[1].request.url.split("//")[1].split("/")[0]
    assert dynamic.failures == [f"{host}: no answer within 0.5 s"]
    assert dynamic.instructions() == (
        'Live data for this call:\n- status (lead status): warm\n- tags: ["a"]\n- The lead is warm.'
    )
    assert not dynamic.live


class _Host:
    def action(self, text: str) -> None: ...

    async def finish_speaking(self, *, starts_within_s: float = 0.0) -> None: ...

    def ending(self, reason: str) -> None: ...

    def transferred(self, number: str) -> None: ...

    def opt_out(self, how: str) -> None: ...

    def learned(self, facts: Mapping[str, tuple[str, Any]]) -> str:
        return ""


def test_tool_schemas_offered() -> None:
    async def hook(number: str) -> bool:
        return True

    options = AgentOptions.from_params(
        {
            "transfer_phone_number": "+15550001111",
            "transfer_list": {"sales": "+1555", "ops": "+1"},
            "tools": [{**TOOL, "input_schema": None}],
        }
    )
    tools = CallTools(options, _Host(), transfer=hook)
    schemas = {s.name: s.to_default_dict() for s in tools.schemas()}
    assert list(schemas) == ["end_call", "opt_out", "transfer_call", "check_order"]
    transfer = schemas["transfer_call"]["parameters"]
    assert transfer["properties"]["department"]["enum"] == ["ops", "sales"]
    assert transfer["required"] == []  # a default number exists
    assert schemas["check_order"]["parameters"] == {
        "type": "object",
        "properties": {},
        "required": [],
    }
    assert CallTools(options, _Host(), transfer=None).names == [
        "end_call",
        "opt_out",
        "check_order",
    ]
    only_list = AgentOptions.from_params({"transfer_list": {"sales": "+1555"}})
    listed = CallTools(only_list, _Host(), transfer=hook).schemas()[2].to_default_dict()
    assert listed["parameters"]["required"] == ["department"]


def test_api_checks_tools_dynamic_data_and_transfer_list() -> None:
    data, errors = check_fields(
        {
            "tools": [TOOL, {"name": "x"}, {**TOOL, "name": "y", "url": "file:///etc/passwd"}],
            "dynamic_data": [{"url": "javascript:alert(1)"}],
            "transfer_list": {"default": "(212) 555-0120", "sales": "not a number"},
        },
        "call_data[2]",
    )
    fields = [e.field for e in errors]
    assert "call_data[2].transfer_list.sales" in fields
    assert "call_data[2].tools[1].description" in fields
    assert "call_data[2].tools[2].url" in fields
    assert "call_data[2].dynamic_data[0].url" in fields
    assert not any(f.startswith("call_data[2].tools[0]") for f in fields)
    assert data["transfer_list"]["default"] == "+12125550120"
    _, fine = check_fields({"tools": [TOOL], "dynamic_data": [{"url": "https://a.example"}]})
    assert fine == []
    # what the official SDK's CustomTool sends (it has no url field): accepted, not usable
    sdk_tool = {
        "name": "lookup",
        "description": "Look it up",
        "input_schema": {},
        "response_data": [],
    }
    assert check_fields({"tools": [sdk_tool]})[1] == []
    assert AgentOptions.from_params({"tools": [sdk_tool]}).tools == ()

"""The agent's tools end to end: real pipecat, the real OpenAI client against the streaming
`FakeOpenAIServer`, real HTTP servers on 127.0.0.1 for custom tools and `dynamic_data`,
and the callee on a `PhoneLine` ticking every 20 ms. Only STT and TTS are fakes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from tests.support.openai_server import FakeOpenAIServer, ToolCall
from tests.support.phone_line import Pause, PhoneLine, Say, WaitForAgent

from callfleet import synth
from callfleet.agent import dynamic_data
from callfleet.agent.call_audio import CallAudio
from callfleet.agent.options import AgentOptions
from callfleet.agent.session import AgentCall, AgentOutcome, PipecatAgent
from callfleet.agent.testing import EnergyVAD, FakeEngines
from callfleet.domain.opt_out import OPT_OUT_LINE
from callfleet.telephony.carrier import EndedBy

SPEECH = synth.speech_like
Script = list[Say | WaitForAgent | Pause]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def http_server(routes: Mapping[str, Handler]) -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 with `routes` ("GET /path" -> handler); yields its URL."""
    app = web.Application()
    for route, handler in routes.items():
        method, path = route.split(" ", 1)
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def converse(
    server: FakeOpenAIServer,
    params: dict[str, Any],
    script: Script,
    *,
    stt_lines: tuple[str, ...] = (),
    transfer: Callable[[str], Awaitable[bool]] | None = None,
    linger_s: float = 1.5,
) -> tuple[AgentOutcome, PhoneLine, FakeEngines]:
    engines = FakeEngines(
        stt_lines=stt_lines, llm_base_url=await server.start(), seconds_per_word=0.15
    )
    try:
        agent = PipecatAgent(engines, vad_factory=EnergyVAD, allow_private_urls=True)
        audio = CallAudio()
        line = PhoneLine(audio, script)
        hangup = asyncio.Event()

        async def callee() -> None:
            await line.run(linger_s=linger_s)
            hangup.set()

        task = asyncio.create_task(callee())
        options = AgentOptions.from_params(params)
        async with asyncio.timeout(45):
            outcome = await agent.run(
                AgentCall("call-7", options, transfer=transfer), audio, hangup
            )
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return outcome, line, engines
    finally:
        await server.close()


def loud_seconds(line: PhoneLine | bytes) -> float:
    """Seconds of the agent's audio the callee has heard so far that were not silence."""
    pcm = bytes(line.agent_audio) if isinstance(line, PhoneLine) else line
    frames = np.frombuffer(pcm[: len(pcm) // 320 * 320], dtype="<i2").astype(float)
    return float((np.sqrt((frames.reshape(-1, 160) ** 2).mean(axis=1)) > 100).sum() * 0.02)


def spoken_seconds(texts: list[str]) -> float:
    """What `loud_seconds` is once all of `texts` have been played (as `FakeTTS` makes them)."""
    return sum(
        loud_seconds(
            synth.speech_like(round(max(0.3, 0.15 * len(t.split())), 2), seed=i, level=0.25)
        )
        for i, t in enumerate(texts, start=1)
    )


def actions(outcome: AgentOutcome) -> list[str]:
    return [t.text for t in outcome.transcript if t.user == "agent-action"]


def offered(request: dict[str, Any]) -> list[str]:
    return [tool["function"]["name"] for tool in request.get("tools", [])]


def tool_results(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def test_custom_tool_calls_a_real_http_server_and_the_llm_gets_its_answer() -> None:
    seen: list[web.Request] = []
    bodies: list[Any] = []

    async def order(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        bodies.append(await request.json())
        return web.json_response({"result": {"status": "shipped", "eta": "Friday"}, "noise": 1})

    async def main() -> tuple[AgentOutcome, PhoneLine, FakeEngines, FakeOpenAIServer]:
        async with http_server({"POST /orders/{order_id}": order}) as base:
            server = FakeOpenAIServer(
                [
                    ToolCall("check_order", {"order_id": "A 17", "verbose": True, "call_id": "x"}),
                    "Your order has shipped and arrives Friday.",
                ]
            )
            tool = {
                "name": "check_order",
                "description": "Look up an order by its id.",
                "url": base + "/orders/{{order_id}}",
                "method": "POST",
                "headers": {"Authorization": "Bearer {{api_token}}"},
                "query": {"caller": "{{phone_number}}"},
                "body": {"order": "{{order_id}}", "verbose": "{{verbose}}", "call": "{{call_id}}"},
                "input_schema": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}, "verbose": {"type": "boolean"}},
                    "required": ["order_id"],
                },
                "speech": "Let me check that for you.",
                "response_data": [
                    {"name": "status", "data": "$.result.status"},
                    {"name": "eta", "data": "result.eta"},
                ],
            }
            params = {
                "task": "You help with orders. The order is {{status}}.",
                "phone_number": "+15550001234",
                "request_data": {"api_token": "t0k3n"},
                "tools": [tool],
            }
            outcome, line, engines = await converse(server, params, [Pause(6.0)])
            return outcome, line, engines, server

    outcome, line, engines, server = asyncio.run(main())

    assert outcome.error is None
    assert offered(server.requests[0]) == ["end_call", "opt_out", "check_order"]
    schema = server.requests[0]["tools"][2]["function"]  # after end_call and opt_out
    assert schema["parameters"]["required"] == ["order_id"]
    # the request was templated from the LLM's arguments and the call's variables
    assert len(seen) == 1
    request = seen[0]
    assert request.raw_path.split("?")[0] == "/orders/A%2017"
    assert request.query["caller"] == "+15550001234"
    assert request.headers["Authorization"] == "Bearer t0k3n"
    assert bodies[0] == {"order": "A 17", "verbose": True, "call": "call-7"}
    # the LLM was given the extracted values and answered with them
    assert len(server.requests) == 2
    result = json.loads(tool_results(server.requests[1])[0])
    assert result == {"status": "shipped", "eta": "Friday"}
    # what it found became part of the instructions for the turns after it
    before = server.requests[0]["messages"][0]["content"]
    after = server.requests[1]["messages"][0]["content"]
    assert before.startswith("You help with orders. The order is {{status}}.\n")
    assert "tools found" not in before
    assert after.startswith("You help with orders. The order is shipped.\n")
    assert after.endswith(
        "What your tools found during this call:\n- status: shipped\n- eta: Friday"
    )
    spoken = engines.ttss[0].spoken
    assert spoken[0] == "Let me check that for you."
    assert "Your order has shipped and arrives Friday." in " ".join(spoken)
    assert actions(outcome)[0].startswith("check_order(")
    assert actions(outcome)[1] == 'check_order -> {"status": "shipped", "eta": "Friday"}'
    assert len(line.agent_onsets) >= 1


def test_custom_tool_refused_by_the_ssrf_guard_reports_an_error_to_the_llm() -> None:
    async def main() -> tuple[AgentOutcome, FakeOpenAIServer]:
        server = FakeOpenAIServer([ToolCall("lookup", {}), "Sorry, I could not look that up."])
        params = {
            "task": "t",
            "tools": [{"name": "lookup", "description": "d", "url": "http://169.254.169.254/x"}],
        }
        outcome, _, _ = await converse(server, params, [Pause(3.0)], linger_s=0.5)
        return outcome, server

    outcome, server = asyncio.run(main())
    error = json.loads(tool_results(server.requests[1])[0])["error"]
    assert "metadata" in error
    assert "lookup -> " in actions(outcome)[1]


def test_end_call_finishes_the_sentence_then_hangs_up() -> None:
    async def main() -> tuple[AgentOutcome, PhoneLine, FakeEngines, FakeOpenAIServer]:
        server = FakeOpenAIServer(
            [
                ToolCall(
                    "end_call",
                    {"reason": "not interested"},
                    say="No problem, thanks for your time. Goodbye.",
                ),
            ]
        )
        params = {"task": "You sell roofs."}
        outcome, line, engines = await converse(server, params, [Pause(15.0)], linger_s=1.0)
        return outcome, line, engines, server

    started = time.monotonic()
    outcome, line, engines, server = asyncio.run(main())
    assert outcome.error is None
    assert outcome.ended_by is EndedBy.ASSISTANT
    assert outcome.hangup_reason == "the agent ended the call: not interested"
    assert time.monotonic() - started < 12  # it hung up; the callee would have waited 16 s
    assert " ".join(engines.ttss[0].spoken) == "No problem, thanks for your time. Goodbye."
    # all of the goodbye was played before the hang-up
    assert loud_seconds(line) >= spoken_seconds(engines.ttss[0].spoken) - 0.05
    assert actions(outcome)[0] == 'end_call({"reason": "not interested"})'
    assert len(server.requests) == 1  # no further turn after the call ended


def test_transfer_to_a_department_says_a_line_then_calls_the_hook() -> None:
    calls: list[str] = []
    heard_before: list[float] = []
    lines: list[PhoneLine] = []

    async def transfer(number: str) -> bool:
        calls.append(number)
        heard_before.append(loud_seconds(lines[0]))
        return True

    async def main() -> tuple[AgentOutcome, FakeEngines, FakeOpenAIServer]:
        server = FakeOpenAIServer([ToolCall("transfer_call", {"department": "sales"})])
        params = {
            "task": "t",
            "transfer_phone_number": "+15550009999",
            "transfer_list": {"default": "+15550001111", "sales": "+15550002222"},
        }
        engines = FakeEngines(llm_base_url=await server.start(), seconds_per_word=0.15)
        try:
            agent = PipecatAgent(engines, vad_factory=EnergyVAD)
            audio = CallAudio()
            line = PhoneLine(audio, [Pause(15.0)])
            lines.append(line)
            hangup = asyncio.Event()
            task = asyncio.create_task(line.run(linger_s=1.0))
            call = AgentCall("call-8", AgentOptions.from_params(params), transfer=transfer)
            async with asyncio.timeout(30):
                outcome = await agent.run(call, audio, hangup)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return outcome, engines, server
        finally:
            await server.close()

    outcome, engines, server = asyncio.run(main())
    assert outcome.error is None
    tools = server.requests[0]["tools"]
    assert offered(server.requests[0]) == ["end_call", "opt_out", "transfer_call"]
    assert tools[2]["function"]["parameters"]["properties"]["department"]["enum"] == ["sales"]
    assert calls == ["+15550002222"]
    assert engines.ttss[0].spoken == ["Transferring you now."]
    # the whole line had been played before the REFER went out
    assert heard_before[0] >= spoken_seconds(engines.ttss[0].spoken) - 0.05 > 0.2
    assert heard_before[0] == pytest.approx(loud_seconds(lines[0]), abs=0.05)
    assert outcome.ended_by is EndedBy.ASSISTANT
    assert outcome.transferred_to == "+15550002222"
    assert outcome.hangup_reason == "transferred to +15550002222"
    assert actions(outcome)[-1] == "transfer_call: transferred to +15550002222"


def test_failed_transfer_is_told_to_the_llm_and_the_call_goes_on() -> None:
    tried: list[str] = []

    async def transfer(number: str) -> bool:
        tried.append(number)
        return False

    async def main() -> tuple[AgentOutcome, FakeEngines, FakeOpenAIServer]:
        server = FakeOpenAIServer(
            [
                ToolCall("transfer_call", {}, say="One moment, I'll transfer you."),
                "Sorry, nobody is available right now.",
            ]
        )
        params = {"task": "t", "transfer_phone_number": "+15550009999"}
        outcome, _, engines = await converse(server, params, [Pause(7.0)], transfer=transfer)
        return outcome, engines, server

    outcome, engines, server = asyncio.run(main())
    assert tried == ["+15550009999"]
    assert (
        "department" not in server.requests[0]["tools"][2]["function"]["parameters"]["properties"]
    )
    assert json.loads(tool_results(server.requests[1])[0])["transferred"] is False
    # the model spoke before calling the tool, so no extra line was added
    assert engines.ttss[0].spoken[0] == "One moment, I'll transfer you."
    assert "Transferring you now." not in engines.ttss[0].spoken
    assert "Sorry, nobody is available right now." in " ".join(engines.ttss[0].spoken)
    assert outcome.ended_by is None and outcome.transferred_to is None
    assert actions(outcome)[-1] == "transfer_call: the transfer to +15550009999 failed"


def test_no_transfer_tool_without_a_number_or_a_carrier_hook() -> None:
    async def main() -> FakeOpenAIServer:
        server = FakeOpenAIServer(["Hello."])
        params = {"task": "t", "transfer_phone_number": "+15550009999"}
        await converse(server, params, [Pause(1.0)], linger_s=0.2)  # no hook
        return server

    assert offered(asyncio.run(main()).requests[0]) == ["end_call", "opt_out"]


def test_dynamic_data_fills_the_prompt_and_refreshes_when_not_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dynamic_data, "REFRESH_EVERY_S", 0.0)
    fetches: dict[str, int] = {"lead": 0, "queue": 0}

    async def lead(request: web.Request) -> web.StreamResponse:
        fetches["lead"] += 1
        assert request.query["phone"] == "+15550001234"
        return web.json_response({"lead": {"status": "warm", "owner": "Dana"}})

    async def queue(request: web.Request) -> web.StreamResponse:
        fetches["queue"] += 1
        return web.json_response({"waiting": fetches["queue"] * 3})

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.json_response({})

    async def main() -> tuple[AgentOutcome, FakeOpenAIServer]:
        routes = {"GET /lead": lead, "GET /queue": queue, "GET /slow": slow}
        async with http_server(routes) as base:
            server = FakeOpenAIServer(["Hi there.", "Sure.", "Bye."])
            params = {
                "task": "Call {{owner}} about a roof; the lead is {{lead_status}}.",
                "phone_number": "+15550001234",
                "dynamic_data": [
                    {
                        "url": base + "/lead",
                        "query": {"phone": "{{phone_number}}"},
                        "response_data": [
                            {
                                "name": "lead_status",
                                "data": "$.lead.status",
                                "context": "how keen the lead is",
                            },
                            {"name": "owner", "data": "lead.owner"},
                        ],
                    },
                    {
                        "url": base + "/queue",
                        "cache": False,
                        "response_data": [
                            {
                                "name": "queue_length",
                                "data": "waiting",
                                "context": "callers waiting for a person",
                            }
                        ],
                    },
                    {"url": base + "/slow", "response_data": [{"name": "x", "data": "x"}]},
                ],
            }
            script: Script = [WaitForAgent(quiet_s=0.3), Say(SPEECH(0.6, seed=3), "q")]
            started = time.monotonic()
            outcome, _, _ = await converse(server, params, script, stt_lines=("How many?",))
            assert time.monotonic() - started < 15  # the slow source cost at most ~3 s
            return outcome, server

    outcome, server = asyncio.run(main())
    assert outcome.error is None
    first = server.requests[0]["messages"][0]
    assert first["role"] == "system"
    system = first["content"]
    assert system.startswith("Call Dana about a roof; the lead is warm.")
    assert "- lead_status (how keen the lead is): warm" in system
    assert "- owner: Dana" in system

    def queue_length(request: dict[str, Any]) -> int:
        text = request["messages"][0]["content"]
        return int(text.split("(callers waiting for a person): ")[1].split()[0])

    # the uncached source was fetched again before each turn; the cached one only once
    assert fetches["lead"] == 1 and fetches["queue"] >= 2
    assert queue_length(server.requests[0]) % 3 == 0
    assert queue_length(server.requests[1]) > queue_length(server.requests[0])
    notes = [t.text for t in outcome.transcript if t.user == "robot"]
    assert any(n.startswith("dynamic data unavailable: 127.0.0.1:") for n in notes)


def test_barge_in_cancels_the_streaming_completion() -> None:
    long_reply = (
        "Our offer today covers the roof, the gutters, the chimney, the skylights, "
        "the flashing and the downspouts, and it lasts for ten whole years."
    )

    async def main() -> tuple[AgentOutcome, FakeOpenAIServer]:
        server = FakeOpenAIServer([long_reply, "Sorry, go ahead."], delay_s=0.15)
        params = {"task": "You sell roofs.", "wait_for_greeting": True}
        script: Script = [
            Pause(0.3),
            Say(SPEECH(0.5, seed=5), "hello"),
            Pause(2.0),  # the agent is about a second into the reply, still streaming
            Say(SPEECH(0.7, seed=6), "stop"),
            WaitForAgent(quiet_s=0.4),
        ]
        outcome, _, _ = await converse(
            server, params, script, stt_lines=("Hello.", "Wait, stop."), linger_s=0.5
        )
        return outcome, server

    outcome, server = asyncio.run(main())
    assert outcome.interruptions >= 1
    assert server.disconnected[:1] == [0]  # the client hung up the first stream mid-way
    assert server.finished[0] is False
    assert len(server.requests) >= 2 and server.finished[1] is True


def _opt_out_call(
    reply: ToolCall | str, heard: str
) -> tuple[AgentOutcome, FakeEngines, FakeOpenAIServer, float]:
    async def main() -> tuple[AgentOutcome, FakeEngines, FakeOpenAIServer]:
        server = FakeOpenAIServer([reply])
        params = {"task": "You sell roofs.", "first_sentence": "Hi, this is Ana from Acme Roofing."}
        script: Script = [WaitForAgent(), Say(SPEECH(1.2, seed=3)), Pause(15.0)]
        outcome, _line, engines = await converse(server, params, script, stt_lines=(heard,))
        return outcome, engines, server

    started = time.monotonic()
    outcome, engines, server = asyncio.run(main())
    return outcome, engines, server, time.monotonic() - started


def test_the_llm_opt_out_tool_confirms_hangs_up_and_reports_the_opt_out() -> None:
    # Words the phrase list does not know: the model recognises the opt-out.
    outcome, engines, server, took = _opt_out_call(
        ToolCall("opt_out"), "Honestly, I never want to hear from your company again."
    )
    assert outcome.error is None
    assert outcome.opted_out is True
    assert outcome.ended_by is EndedBy.ASSISTANT
    assert outcome.hangup_reason == "opt-out: the agent's opt_out tool"
    assert took < 14  # it hung up; the callee would have waited 15 s more
    assert engines.ttss[0].spoken[-1] == OPT_OUT_LINE
    assert actions(outcome) == ["opt_out({})"]
    assert len(server.requests) == 1 and "opt_out" in offered(server.requests[0])


def test_with_an_llm_the_phrase_matcher_is_the_backstop() -> None:
    outcome, engines, server, _took = _opt_out_call(
        "Sure, let me tell you about our roofs.", "Please take me off your list."
    )
    assert outcome.opted_out is True
    assert outcome.ended_by is EndedBy.ASSISTANT
    assert engines.ttss[0].spoken[-1] == OPT_OUT_LINE
    assert "Sure, let me tell you about our roofs." not in engines.ttss[0].spoken
    assert server.requests == []  # the turn never reached the model
    notes = [t.text for t in outcome.transcript if t.user == "robot"]
    assert notes == [
        'opt-out: the callee said "Please take me off your list"; the number goes on the '
        "do-not-call list"
    ]

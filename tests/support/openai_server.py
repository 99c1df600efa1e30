"""`FakeOpenAIServer`: the LLM path without a model, over real HTTP.

A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol
(streamed): canned replies, or `ToolCall`s streamed as the OpenAI API streams a
function call; it records whether the client hung up in the middle of a stream
(a barge-in). Point `FakeEngines(llm_base_url=...)` at its `base_url`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeOpenAIServer", "ToolCall"]


@dataclass(frozen=True)
class ToolCall:
    """A reply of `FakeOpenAIServer` that calls a tool, after saying `say` (if any)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    say: str = ""


class FakeOpenAIServer:
    """An OpenAI-compatible chat-completions endpoint on 127.0.0.1 streaming canned replies.

    Each request gets the next reply (then "Okay."), streamed word by word as
    server-sent events, `delay_s` apart; a `ToolCall` reply streams its words and
    then the call, its arguments in pieces, ending with `finish_reason:
    "tool_calls"`. `requests` keeps every request body, so a test can check the
    system prompt, the tools offered and what the conversation history held;
    `finished[i]` says whether the stream of request `i` was written to its end and
    `disconnected` lists the requests whose client went away in the middle.
    """

    def __init__(self, replies: Sequence[str | ToolCall], *, delay_s: float = 0.0) -> None:
        self.replies = list(replies)
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.finished: list[bool] = []
        self.disconnected: list[int] = []
        self._runner: Any = None
        self.base_url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _complete(self, request: Any) -> Any:
        body = await request.json()
        self.requests.append(body)
        reply: str | ToolCall = self.replies.pop(0) if self.replies else "Okay."
        model = body.get("model", "fake")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            event = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(event)}\n\n".encode()

        if not body.get("stream"):
            self.finished.append(True)
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": str(reply)},
                        }
                    ],
                }
            )
        index = len(self.requests) - 1
        self.finished.append(False)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await self._stream(response, chunk, reply)
        except asyncio.CancelledError:
            # The client closed the connection mid-stream (pipecat cancels a completion
            # on a barge-in); aiohttp either cancels this handler or fails the write.
            self.disconnected.append(index)
            raise
        except ConnectionError:
            self.disconnected.append(index)
            return response
        self.finished[index] = True
        return response

    async def _stream(self, response: Any, chunk: Any, reply: str | ToolCall) -> None:
        text = reply.say if isinstance(reply, ToolCall) else reply
        await response.write(chunk({"role": "assistant", "content": ""}))
        for i, word in enumerate(text.split(" ") if text else []):
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            await response.write(chunk({"content": word if i == 0 else " " + word}))
        if isinstance(reply, ToolCall):
            call_id = f"call_{len(self.requests)}"
            await response.write(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": reply.name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            arguments = json.dumps(reply.arguments)
            for start in range(0, len(arguments), 8):
                piece = arguments[start : start + 8]
                await response.write(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                )
            await response.write(chunk({}, "tool_calls"))
        else:
            await response.write(chunk({}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()

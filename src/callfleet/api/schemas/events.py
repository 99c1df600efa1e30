"""The Server-Sent Events streams' response (`/v1/events`, `/v1/batches/{id}/events`)."""

from __future__ import annotations

from typing import Any

__all__ = ["STREAM_RESPONSE"]

STREAM_DESCRIPTION = """\
A `text/event-stream` that does not end while the client stays connected. Each event:

```
id: 1842
event: call.ended
data: {"call_id": "…", "batch_id": "…", "status": "completed", …}
```

`id` increases strictly; send the last one back as `Last-Event-ID` (the header, or
`?last_event_id=`) to resume: every later event is replayed, then the stream tails.
`event` is one of `call.queued`, `call.started`, `call.answered`, `call.ended`,
`batch.paused`, `batch.resumed`, `batch.stopped`, `batch.completed`. `data` is JSON:
for `call.ended` the call's details object (the body of `GET /v1/calls/{call_id}` and
of the call webhook), for `batch.completed` the batch webhook's body, for the others
`{"call_id", "batch_id", "status", "at"}` (a batch event: `{"batch_id", "status",
"at"}`). An idle stream gets a `: ping` comment every 15 seconds.
"""

STREAM_RESPONSE: dict[int | str, Any] = {
    200: {
        "description": STREAM_DESCRIPTION,
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}

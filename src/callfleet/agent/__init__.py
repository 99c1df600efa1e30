"""The AI agent on a live call, built on pipecat (pinned 1.14.0).

How a carrier uses it, once per process and once per answered call:

    engines = LocalEngines(ProviderSettings.from_settings(settings)); engines.start()
    agent = PipecatAgent(engines)                      # a `CallMedia`
    ...
    audio = CallAudio()                                # per call
    rtp.on_audio, rtp.source = audio.feed, audio       # RtpSession's two hooks
    outcome = await agent.run(AgentCall(call_id, AgentOptions.from_params(params),
                                        recording_path), audio, ended)

Modules: `call_audio` (the RTP meeting point), `transport` (pipecat transport over
it), `session` (`PipecatAgent`, `AgentCall`, `AgentOutcome`, `CallMedia`),
`controller` (opening and voicemail), `amd` (answering-machine detection),
`recording`, `resample`, `options`, `engines` and `providers/` (STT, TTS, LLM),
`runtime` (`AgentRuntime`: the engines loaded in the background at start-up),
`models` (pinned model packages and their SHA-256), `testing` (fakes for the
agent's neighbours' tests), `analysis` (post-call questions). Names are imported
lazily: `import callfleet.agent` does not import pipecat (about 2 s and 100 MB),
only using an agent does.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AgentCall",
    "AgentOptions",
    "AgentOutcome",
    "CallAudio",
    "CallMedia",
    "LocalEngines",
    "PipecatAgent",
    "ProviderSettings",
]

_WHERE = {
    "AgentCall": "session",
    "AgentOutcome": "session",
    "CallMedia": "session",
    "PipecatAgent": "session",
    "AgentOptions": "options",
    "ProviderSettings": "options",
    "CallAudio": "call_audio",
    "LocalEngines": "engines",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'callfleet.agent' has no attribute {name!r}")
    return getattr(importlib.import_module(f"callfleet.agent.{module}"), name)

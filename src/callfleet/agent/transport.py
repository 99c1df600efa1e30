"""The pipecat transport of a phone call: `CallAudio` in, `CallAudio` out.

`CallTransport(audio).input()` turns the callee's 20 ms frames (8 kHz) into
`InputAudioRawFrame`s at the pipeline's input rate (16 kHz for Silero and
Whisper, through `Upsampler2x`), after handing each raw frame to `on_callee_audio`
(the answering-machine detector listens there, at the call's own rate).

`CallTransport(audio).output()` writes the agent's audio, at 8 kHz, into the
call's playout buffer. Its `write_audio_frame` blocks while more than
`CallAudio.max_queued_ms` is queued, so the pipeline is paced by the RTP clock that
reads the buffer every 20 ms; when nothing is queued that clock sends comfort
silence. On an `InterruptionFrame` (the callee barged in) the buffer is cleared at
once, on top of pipecat dropping its own queued audio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from callfleet.agent import _pipecat  # noqa: F401  (silences pipecat's import warnings)

# isort: split

from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from callfleet.agent.call_audio import SAMPLE_RATE, CallAudio
from callfleet.agent.resample import Upsampler2x

__all__ = ["CallInput", "CallOutput", "CallTransport", "call_transport_params"]


def call_transport_params() -> TransportParams:
    return TransportParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_out_sample_rate=SAMPLE_RATE,
        audio_out_end_silence_secs=0,  # the RTP clock sends comfort silence itself
    )


class CallInput(BaseInputTransport):
    def __init__(
        self,
        audio: CallAudio,
        params: TransportParams,
        on_callee_audio: Callable[[bytes], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, **kwargs)
        self._audio = audio
        self._on_callee_audio = on_callee_audio
        self._task: asyncio.Task[None] | None = None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if self._task is None:
            self._task = self.create_task(self._receive())
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._stop_receiving()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._stop_receiving()

    async def _stop_receiving(self) -> None:
        if self._task is not None:
            await self.cancel_task(self._task)
            self._task = None

    async def _receive(self) -> None:
        rate = self.sample_rate
        doubler = Upsampler2x() if rate == 2 * SAMPLE_RATE else None
        resampler = create_stream_resampler() if doubler is None and rate != SAMPLE_RATE else None
        async for pcm in self._audio.frames():
            if self._on_callee_audio is not None:
                self._on_callee_audio(pcm)
            if doubler is not None:
                audio = doubler.process(pcm)
            elif resampler is not None:
                audio = await resampler.resample(pcm, SAMPLE_RATE, rate)
            else:
                audio = pcm
            if audio:
                await self.push_audio_frame(
                    InputAudioRawFrame(audio=audio, sample_rate=rate, num_channels=1)
                )


class CallOutput(BaseOutputTransport):
    def __init__(self, audio: CallAudio, params: TransportParams, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._audio = audio
        self.interruptions = 0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame):
            self._audio.clear_playout()
            self.interruptions += 1
        await super().process_frame(frame, direction)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        if frame.sample_rate != SAMPLE_RATE or frame.num_channels != 1:
            raise ValueError(
                f"the call carries 8 kHz mono; got {frame.sample_rate} Hz x{frame.num_channels}"
            )
        await self._audio.play(frame.audio)
        return True


class CallTransport(BaseTransport):
    """One call's media as a pipecat transport; `input()` and `output()` are processors."""

    def __init__(
        self,
        audio: CallAudio,
        *,
        on_callee_audio: Callable[[bytes], None] | None = None,
        params: TransportParams | None = None,
    ) -> None:
        super().__init__()
        self.audio = audio
        self._params = params or call_transport_params()
        self._input = CallInput(audio, self._params, on_callee_audio, name="call-input")
        self._output = CallOutput(audio, self._params, name="call-output")

    def input(self) -> CallInput:
        return self._input

    def output(self) -> CallOutput:
        return self._output

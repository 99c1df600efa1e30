"""The agent on the local providers: voice-to-voice latency, concurrent calls, RSS, AMD.

Conversations run in this process on the real pipeline (Silero VAD, faster-whisper
tiny.en, Piper joe in its own process, the scripted policy) against `PhoneLine`
callees that speak espeak-ng sentences through an 8 kHz mu-law channel and wait for
each reply. Voice-to-voice latency is the time from the end of a callee sentence to
the first audio frame of the agent's reply, as the callee's 20 ms clock sees it.

1. one call alone: latency p50/p95 (the brief: p50 < 1.5 s, p95 < 2.5 s);
2. `--calls` calls at once (default 4), their starts `--stagger` seconds apart (so
   their turns do not all fall on the same instants; `--stagger 0` is that worst
   case): latency p50/p95 and its ratio to the single call (the brief: at least 4
   calls without p95 doubling), and the RSS per live call (peak RSS of this process
   and its children while the calls run, minus the RSS with the models loaded and
   no call, divided by the number of calls);
3. answering-machine detection on the generated labelled set with spoken greetings:
   accuracy and the median time to a human verdict.

Targets are printed for reading, not asserted; the machine is shared, so look at the
load average printed with the figures.

    .venv/bin/python benchmarks/bench_agent.py [--calls N] [--turns N] [--tts espeak]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import threading
import time

import psutil  # type: ignore[import-untyped]

from callfleet.agent.amd import AnsweringMachineDetector
from callfleet.agent.call_audio import CallAudio
from callfleet.agent.engines import LocalEngines
from callfleet.agent.options import AgentOptions, ProviderSettings
from callfleet.agent.session import AgentCall, PipecatAgent
from callfleet.agent.testing import (
    HUMAN_PHRASES,
    MACHINE_PHRASES,
    PhoneLine,
    Say,
    WaitForAgent,
    amd_labelled_set,
    espeak_phone_audio,
)
from callfleet.telephony.carrier import AnsweredBy

SENTENCES = [
    "I would like to hear more about the price.",
    "Can you call me back tomorrow morning?",
    "Sure, that sounds good to me.",
    "Maybe next week would be better for me.",
    "What time would the inspection take?",
    "Okay, thank you for calling.",
]


class RssSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(os.getpid())
        self.peak = 0
        self._halt = threading.Event()

    def rss(self) -> int:
        total = int(self.proc.memory_info().rss)
        for child in self.proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += int(child.memory_info().rss)
        return total

    def run(self) -> None:
        while not self._halt.wait(0.2):
            self.peak = max(self.peak, self.rss())

    def stop(self) -> None:
        self._halt.set()
        self.join()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def one_call(
    agent: PipecatAgent, audio_lines: list[bytes], texts: list[str], name: str, delay_s: float
) -> list[float]:
    await asyncio.sleep(delay_s)
    script: list[Say | WaitForAgent] = []
    for pcm, text in zip(audio_lines, texts, strict=True):
        script += [WaitForAgent(quiet_s=0.6), Say(pcm, text)]
    options = AgentOptions(
        first_sentence="Hi, this is Alex calling about your roof.",
        script=tuple(f"Thank you. Question number {i + 2}?" for i in range(len(texts) - 1)),
    )
    audio = CallAudio()
    line = PhoneLine(audio, script)
    hangup = asyncio.Event()

    async def callee() -> None:
        await line.run(linger_s=5.0)
        hangup.set()

    task = asyncio.create_task(callee())
    async with asyncio.timeout(120):
        await agent.run(AgentCall(name, options), audio, hangup)
        await task
    return [r.latency_s for r in line.replies if r.latency_s is not None]


async def calls_at_once(
    agent: PipecatAgent, n: int, turns: int, stagger_s: float
) -> tuple[list[float], int]:
    said = {text: await espeak_phone_audio(text) for text in SENTENCES}
    sampler = RssSampler()
    sampler.start()
    jobs = []
    for i in range(n):
        texts = [SENTENCES[(i + k) % len(SENTENCES)] for k in range(turns)]
        audio = [said[t] for t in texts]
        jobs.append(one_call(agent, audio, texts, f"bench-{n}-{i}", i * stagger_s))
    results = await asyncio.gather(*jobs)
    sampler.stop()
    return [x for latencies in results for x in latencies], sampler.peak


def amd_figures() -> tuple[int, int, float]:
    async def phrases() -> dict[str, bytes]:
        return {t: await espeak_phone_audio(t) for t in HUMAN_PHRASES + MACHINE_PHRASES}

    cases = amd_labelled_set(asyncio.run(phrases()))
    correct, human_times = 0, []
    for expected, _name, pcm in cases:
        detector = AnsweringMachineDetector()
        for offset in range(0, len(pcm), 320):
            detector.feed(pcm[offset : offset + 320])
        correct += detector.answered_by is expected
        if expected is AnsweredBy.HUMAN and detector.verdict is not None:
            human_times.append(detector.verdict.decided_after_s)
    return correct, len(cases), statistics.median(human_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--tts", default="piper-local", choices=["piper-local", "espeak"])
    parser.add_argument(
        "--stagger", type=float, default=1.3,
        help="seconds between the starts of the concurrent calls (0: all in lockstep, "
        "every callee finishing each sentence at the same instant: the worst case)",
    )  # fmt: skip
    args = parser.parse_args()

    print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}")
    started = time.monotonic()
    engines = LocalEngines(ProviderSettings(tts=args.tts))
    engines.start()
    agent = PipecatAgent(engines)
    print(f"engines loaded in {time.monotonic() - started:.1f} s (TTS {engines.tts_provider})")
    idle = RssSampler().rss()
    try:
        single, _ = asyncio.run(calls_at_once(agent, 1, args.turns, 0.0))
        many, peak = asyncio.run(calls_at_once(agent, args.calls, args.turns, args.stagger))
    finally:
        engines.close()
    p50, p95 = statistics.median(single), percentile(single, 0.95)
    m50, m95 = statistics.median(many), percentile(many, 0.95)
    print(f"\nvoice-to-voice, 1 call ({len(single)} replies): p50 {p50:.2f} s, p95 {p95:.2f} s"
          "   [targets: p50 < 1.5 s, p95 < 2.5 s]")  # fmt: skip
    print(f"voice-to-voice, {args.calls} calls at once, starts {args.stagger:g} s apart "
          f"({len(many)} replies): "
          f"p50 {m50:.2f} s, p95 {m95:.2f} s; p95 ratio to 1 call {m95 / p95:.2f}"
          "   [target: < 2.0]")  # fmt: skip
    print(f"RSS: {idle / 2**20:.0f} MB with models loaded (Piper child included); "
          f"peak {peak / 2**20:.0f} MB with {args.calls} calls = "
          f"{(peak - idle) / args.calls / 2**20:.0f} MB per live call")  # fmt: skip
    correct, total, median = amd_figures()
    print(f"AMD: {correct}/{total} = {correct / total:.1%} correct; median human decision "
          f"{median:.2f} s after answer   [targets: >= 95 %, <= 2.5 s]")  # fmt: skip
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()

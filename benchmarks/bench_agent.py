"""The agent on the local providers: turn-taking latency, cut-ins, AMD, calls per box.

Conversations run in this process on the real pipeline (Silero VAD, faster-whisper
tiny.en, Smart Turn v3.2, Piper joe in its own processes, the scripted policy)
against `PhoneLine` callees that speak in the simulated people's voice (Piper)
through an 8 kHz mu-law channel and wait for each reply. Voice-to-voice latency is
the time from the end of a callee sentence to the first audio frame of the agent's
reply, as the callee's 20 ms clock sees it.

Printed, each as a figure (and with `--baseline`, beside the same figure for the
agent as it was: a fixed 0.2 s + `interruption_threshold` of silence ends every
turn, STT only after the VAD ends a segment, no ready audio, AMD by greeting
length, all in this run):

1. voice-to-voice p50/p95 for 1, 4 and 8 calls (`--sizes`), their starts
   `--stagger` seconds apart and in lockstep (every callee ending each sentence at
   the same instant: the worst case); the RSS per live call at the largest size;
   what the pause transcripts (streaming STT) came to, and the longest a job waited
   in the shared Whisper and Piper pools, by priority;
2. the post-greeting gap: the callee says "Hello?" and waits; from the end of it to
   the agent's first sound, with `answered_by_enabled` on and off;
3. the false cut-in rate: callees whose lines pause 0.4-0.8 s mid-sentence (the
   simulator's `PAUSING_LINES`, three a call, each said as one sentence with its
   pauses stretched, as the simulator's 28-29 people say them); a cut-in is the
   agent starting while the callee is still mid-line. The lines cut in on are
   printed;
4. answering-machine detection on `tests/data/greetings.jsonl` (63 greetings
   written apart from the detector): accuracy on people and on machines, and the
   median time to the verdict.

Targets are printed for reading, not asserted; the machine may be shared, so look at
the load average printed with the figures.

    .venv/bin/python benchmarks/bench_agent.py [--baseline] [--sizes 1,4,8] [--turns N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

# The scripted callee and the labelled sets the agent tests use; benchmarks run from
# the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.greetings import detect, greeting_call, load_greetings  # noqa: E402
from tests.support.phone_line import Pause, PhoneLine, Say, WaitForAgent  # noqa: E402
from tests.support.speech_sets import people_phone_audio, phone_channel  # noqa: E402

from callfleet.agent.amd import AnsweringMachineDetector
from callfleet.agent.call_audio import CallAudio
from callfleet.agent.engines import LocalEngines
from callfleet.agent.options import AgentOptions, ProviderSettings
from callfleet.agent.providers.fair_pool import Priority
from callfleet.agent.providers.whisper_stt import load_whisper, whisper_pool
from callfleet.agent.session import AgentCall, PipecatAgent
from callfleet.simulator import voices
from callfleet.simulator.hesitation import shown, voiced
from callfleet.simulator.rules import PAUSING_LINES
from callfleet.simulator.script import utterance
from callfleet.synth import SAMPLE_RATE

SENTENCES = [
    "I would like to hear more about the price.",
    "Can you call me back tomorrow morning?",
    "Sure, that sounds good to me.",
    "Maybe next week would be better for me.",
    "What time would the inspection take?",
    "Okay, thank you for calling.",
]
_FIRST = "Hi, this is Alex calling about your roof."
_TARGETS = {
    "1 call": "p50 <= 0.5 s, p95 <= 0.8 s",
    "8 calls staggered": "p95 <= 1.0 s",
    "gap": "p50 <= 0.6 s with AMD on",
    "cut-ins": "<= 2 %",
    "amd": ">= 98 % people, >= 95 % machines",
}


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
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Lines:
    """What one call's callee does and what it measured."""

    latencies: list[float]
    utterances: int
    cut_ins: list[str]


async def one_call(
    agent: PipecatAgent,
    script: list[Say | WaitForAgent | Pause],
    name: str,
    delay_s: float,
    options: AgentOptions,
) -> Lines:
    await asyncio.sleep(delay_s)
    audio = CallAudio()
    line = PhoneLine(audio, script)
    hangup = asyncio.Event()
    agent.engines.prepare(options)  # as the carrier does when it dials

    async def callee() -> None:
        await line.run(linger_s=4.0)
        hangup.set()

    task = asyncio.create_task(callee())
    async with asyncio.timeout(180):
        await agent.run(AgentCall(name, options), audio, hangup)
        await task
    latencies = [r.latency_s for r in line.replies if r.latency_s is not None]
    return Lines(latencies, line.utterances, line.cut_in_lines)


def _conversation(said: list[bytes], texts: list[str]) -> list[Say | WaitForAgent | Pause]:
    script: list[Say | WaitForAgent | Pause] = []
    for pcm, text in zip(said, texts, strict=True):
        script += [WaitForAgent(quiet_s=0.6), Say(pcm, text)]
    return script


async def _callee_audio(text: str) -> bytes:
    """A line in the simulated people's voice (Piper, rendered once and cached)."""
    voices.render_all([text])
    return people_phone_audio(text)


def _options(turns: int, **extra: Any) -> AgentOptions:
    script = tuple(f"Thank you. Question number {i + 2}?" for i in range(turns - 1))
    return AgentOptions(first_sentence=_FIRST, script=script, **extra)


async def calls_at_once(
    agent: PipecatAgent, n: int, turns: int, stagger_s: float
) -> tuple[list[float], int]:
    said = {text: await _callee_audio(text) for text in SENTENCES}
    sampler = RssSampler()
    sampler.start()
    jobs = []
    for i in range(n):
        texts = [SENTENCES[(i + k) % len(SENTENCES)] for k in range(turns)]
        script = _conversation([said[t] for t in texts], texts)
        jobs.append(one_call(agent, script, f"bench-{n}-{i}", i * stagger_s, _options(turns)))
    results = await asyncio.gather(*jobs)
    sampler.stop()
    return [x for r in results for x in r.latencies], sampler.peak


async def greeting_gaps(agent: PipecatAgent, amd: bool, calls: int) -> list[float]:
    """The callee says "Hello?" and waits: the gap to the agent's first sound."""
    hello = await _callee_audio("Hello?")
    gaps = []
    for i in range(calls):
        script: list[Say | WaitForAgent | Pause] = [Pause(0.4), Say(hello, "hello")]
        script.append(WaitForAgent(quiet_s=0.6))
        options = _options(1, wait_for_greeting=True, answered_by_enabled=amd)
        result = await one_call(agent, script, f"gap-{amd}-{i}", 0.0, options)
        gaps += result.latencies[:1]
    return gaps


async def pausing_callees(agent: PipecatAgent, calls: int) -> tuple[list[str], int]:
    """(the lines cut in on, lines said) over callees whose lines pause mid-sentence:
    call i says three of `PAUSING_LINES` from the (3i)th on, two calls at a time."""
    rendered = voices.render_all([voiced(line) for line in PAUSING_LINES])
    cut_ins: list[str] = []
    lines = 0

    async def call(i: int, delay_s: float) -> Lines:
        texts = [PAUSING_LINES[(3 * i + k) % len(PAUSING_LINES)] for k in range(3)]
        said = [phone_channel(utterance(t, rendered).pcm, SAMPLE_RATE) for t in texts]
        script = _conversation(said, texts)
        # the scripted policy hangs up after its last line: one more than the callee's
        return await one_call(agent, script, f"pause-{i}", delay_s, _options(len(said) + 1))

    for first in range(0, calls, 2):
        pair = [call(i, 0.7 * (i - first)) for i in range(first, min(calls, first + 2))]
        for result in await asyncio.gather(*pair):
            cut_ins += result.cut_ins
            lines += result.utterances
    return cut_ins, lines


def amd_figures(hears_words: bool) -> tuple[str, str, float, float]:
    """People right/total, machines right/total, median verdict s (people, machines)."""
    model = load_whisper()
    right = {"person": 0, "machine": 0}
    total = {"person": 0, "machine": 0}
    times: dict[str, list[float]] = {"person": [], "machine": []}
    for i, greeting in enumerate(load_greetings()):
        pcm = asyncio.run(greeting_call(greeting, i))
        if hears_words:
            found = detect(pcm, model)
            answered_by, decided = found.answered_by, found.decided
        else:
            detector = AnsweringMachineDetector()
            for offset in range(0, len(pcm), 320):
                detector.feed(pcm[offset : offset + 320])
            answered_by, decided = detector.answered_by, detector.verdict
        total[greeting.who] += 1
        right[greeting.who] += answered_by is greeting.expected
        if decided is not None:
            times[greeting.who].append(decided.decided_after_s)
    people = f"{right['person']}/{total['person']} ({right['person'] / total['person']:.0%})"
    machines = f"{right['machine']}/{total['machine']} ({right['machine'] / total['machine']:.0%})"
    return people, machines, statistics.median(times["person"]), statistics.median(times["machine"])


def measure(agent: PipecatAgent, args: argparse.Namespace, idle: int) -> dict[str, str]:
    """Every figure of one agent, as printable text by row name."""
    rows: dict[str, str] = {}
    for n in args.sizes:
        for stagger in (args.stagger, 0.0) if n > 1 else (0.0,):
            latencies, peak = asyncio.run(calls_at_once(agent, n, args.turns, stagger))
            kind = "" if n == 1 else (" staggered" if stagger else " lockstep")
            row = f"v2v {n} call{'s' if n > 1 else ''}{kind}"
            rows[row] = (
                f"p50 {statistics.median(latencies):.2f} s, p95 {percentile(latencies, 0.95):.2f} s"
                f" (n={len(latencies)})"
            )
            print(f"  {row}: {rows[row]}", flush=True)
            if n == max(args.sizes) and stagger:
                # The baseline runs second, on memory the first run already grew.
                per_call = f"{(peak - idle) / n / 2**20:.0f} MB"
                rows[f"RSS per live call ({n} calls)"] = per_call if idle else "(not measured)"
    for amd in (True, False):
        gaps = asyncio.run(greeting_gaps(agent, amd, args.gap_calls))
        row = f"post-greeting gap, AMD {'on' if amd else 'off'}"
        rows[row] = f"p50 {statistics.median(gaps):.2f} s, p95 {percentile(gaps, 0.95):.2f} s"
        print(f"  {row}: {rows[row]}", flush=True)
    cut_ins, lines = asyncio.run(pausing_callees(agent, args.pause_calls))
    rows["false cut-ins (pausing callees)"] = (
        f"{len(cut_ins)}/{lines} = {len(cut_ins) / max(1, lines):.0%}"
    )
    print(f"  false cut-ins: {rows['false cut-ins (pausing callees)']}", flush=True)
    for text, times in Counter(cut_ins).most_common():
        print(f"    {times}x {shown(text)!r}", flush=True)
    return rows


def pool_figures(engines: LocalEngines) -> str:
    """What the pause transcripts came to, and the longest waits in the shared pools."""
    s = engines.stt_stats
    waits = ", ".join(
        f"{pool.name} {p.name} {pool.longest_wait_s[p]:.2f} s"
        for pool in (whisper_pool(), *([engines.piper.scheduler] if engines.piper else []))
        for p in Priority
        if pool.served[p]
    )
    return (
        f"pause transcripts: {s.started} started, {s.used} used, {s.spoken_over} spoken over, "
        f"{s.too_early} too early, {s.late} late; longest waits: {waits}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", action="store_true", help="also measure the old agent")
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1, 4, 8])
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--gap-calls", type=int, default=4)
    parser.add_argument(
        "--pause-calls",
        type=int,
        default=16,
        help="pausing callees (three lines each; 16 say every line four times)",
    )
    parser.add_argument("--tts", default="piper-local", choices=["piper-local", "espeak"])
    parser.add_argument("--no-amd", action="store_true", help="skip the AMD figures")
    parser.add_argument(
        "--stagger",
        type=float,
        default=1.3,
        help="seconds between the starts of the concurrent calls in the staggered runs",
    )
    args = parser.parse_args()

    print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}")
    started = time.monotonic()
    engines = LocalEngines(ProviderSettings(tts=args.tts))
    engines.start()
    engines.warm()
    print(f"engines loaded in {time.monotonic() - started:.1f} s (TTS {engines.tts_provider})")
    idle = RssSampler().rss()
    columns: dict[str, dict[str, str]] = {}
    try:
        print("now:", flush=True)
        columns["now"] = measure(PipecatAgent(engines), args, idle)
        print(f"  {pool_figures(engines)}", flush=True)
        if args.baseline:
            print("baseline:", flush=True)
            ready, engines._ready = engines._ready, None  # noqa: SLF001  (no ready audio)
            engines.streaming_stt = False
            old = PipecatAgent(engines, end_of_turn="silence")
            columns["baseline"] = measure(old, args, 0)
            engines._ready = ready  # noqa: SLF001
    finally:
        engines.close()
    for name, hears_words in (("now", True), ("baseline", False)):
        if name in columns and not args.no_amd:
            people, machines, p_s, m_s = amd_figures(hears_words)
            columns[name]["AMD people"] = people
            columns[name]["AMD machines"] = machines
            columns[name]["AMD median verdict"] = f"people {p_s:.2f} s, machines {m_s:.2f} s"
    print()
    header = f"{'':34} {'now':38}" + (f" {'baseline':38}" if args.baseline else "")
    print(header)
    for row in columns["now"]:
        cells = [columns[c].get(row, "") for c in columns]
        print(f"{row:34} " + " ".join(f"{c:38}" for c in cells))
    print(f"\ntargets: {_TARGETS}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()

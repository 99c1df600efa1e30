"""SIP signalling on loopback against SIPp: call set-up latency and calls per second.

Part A, set-up latency. `--calls` (default 200) sequential calls from our `SipClient`
to a SIPp UAS (`sipp -sn uas`: 180 then 200 at once, no media): INVITE sent -> 200
received, as measured by the client itself (`InviteResult.setup_time_s`, loop clock,
from just before the INVITE is written to the moment the 200 is handled), and, for
reference, the whole `invite()` call (includes building the request and sending the
ACK). Each call is then hung up (BYE) before the next one. Median / p95 / max.
Target: median under 5 ms.

* **baseline**: the same call flow from a bare blocking UDP socket in this process
  (pre-formatted INVITE, `recv` until the 200, ACK, BYE, its 200), timed with
  `perf_counter` from `sendto(INVITE)` to the 200's `recv`: the floor made of the
  loopback, the kernel and SIPp's own turnaround, with no SIP stack on our side.
  Ratio = ours / baseline (median and p95).
* reference: SIPp's own UAC (`-sn uac -l 1`) against the same UAS, its response
  time (`-trace_rtt`: INVITE sent -> 200). SIPp's clock has 1 ms resolution, so this
  is a coarse sanity check, not the baseline.

The calls of the three lines are run in interleaved chunks against one UAS.

Part B, signalling throughput. `--tput-calls` (default 2,000) calls through
`SipCarrier.place_call` (the dispatcher's carrier port: INVITE, 180, 200, ACK, an RTP
session opened and closed, BYE as soon as the call is answered), at most
`--concurrency` (default 200) in flight, against a SIPp UAS with a raised call limit
(`-l`). Figure: calls completed per second (wall), failures, per-call time, and CPU
time of this process per call. Target: at least 200 calls/s.

The rate is taken between the 5 % and the 95 % completion marks (steady state;
the whole-run rate is printed too: a single call whose BYE or INVITE goes
unanswered waits out Timer F/B, 32 s, and would otherwise set the figure alone).

* **baseline**: SIPp's UAC (`-sn uac`) against a fresh SIPp UAS with the same number
  of calls and the same limit of calls in flight, offered at the steady rate we
  achieved (`-r`): can SIPp carry our rate, and how loaded is the UAS at it. Its achieved rate
  comes from its own statistics (`CallRate(C)`, `-trace_stat`).
* reference: SIPp's UAC offered `--sipp-max-rate` calls/s (default 2,000): what the
  peer itself can do on this machine.

Nothing passes or fails; figures are printed. SIPp (`sip-tester`) must be installed.

    .venv/bin/python benchmarks/bench_sip.py [--calls 200] [--tput-calls 2000]
        [--concurrency 200] [--skip-setup] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c

# The free-port helpers the SIP tests use; benchmarks run from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.peers import free_port_block, free_udp_port, wait_bound  # noqa: E402

from callfleet.telephony.carrier import DialRequest, DialResult, Outcome, TrunkTarget
from callfleet.telephony.rtp.session import RtpSession
from callfleet.telephony.sip.client import SipClient
from callfleet.telephony.sip_carrier import SipCarrier

TARGET_SETUP_MS = 5.0
TARGET_CPS = 200.0


# -- peers -----------------------------------------------------------------------


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if path is None:
        sys.exit("sipp is not installed: apt-get install -y --no-install-recommends sip-tester")
    return path


class SippProc:
    """One SIPp process in `workdir`, killed on exit."""

    def __init__(self, workdir: Path, name: str, argv: list[str]) -> None:
        self.workdir = workdir / name
        self.workdir.mkdir()
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SippProc:
        out = (self.workdir / "sipp.out").open("wb")
        self.proc = subprocess.Popen(
            self.argv, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        out.close()
        return self

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self) -> str:
        return (self.workdir / "sipp.out").read_text(errors="replace")[-2000:]


def start_uas(workdir: Path, name: str, limit: int) -> tuple[SippProc, int]:
    port = free_udp_port()
    media = free_port_block(4)
    # Laid out by hand (fmt: skip): each flag beside its value.
    uas = SippProc(workdir, name, [
        sipp_binary(), "-sn", "uas", "-i", "127.0.0.1", "-p", str(port),
        "-mi", "127.0.0.1", "-mp", str(media), "-nostdin", "-l", str(limit),
        "-timeout", "600s", "-buff_size", str(4 << 20), "-trace_err",
    ]).start()  # fmt: skip
    try:
        wait_bound(port)
    except RuntimeError:
        uas.stop()
        sys.exit(f"SIPp UAS did not bind {port}:\n{uas.log_tail()}")
    return uas, port


def run_sipp_uac(
    workdir: Path,
    name: str,
    uas_port: int,
    *,
    calls: int,
    limit: int,
    rate: float,
    extra: list[str] | None = None,
) -> tuple[int, Path, float]:
    """SIPp's built-in UAC; returns (exit code, its directory, wall seconds)."""
    port = free_udp_port()
    # Laid out by hand (fmt: skip): each flag beside its value.
    uac = SippProc(workdir, name, [
        sipp_binary(), "-sn", "uac", f"127.0.0.1:{uas_port}", "-i", "127.0.0.1",
        "-p", str(port), "-nostdin", "-m", str(calls), "-l", str(limit),
        "-r", str(max(1, round(rate))), "-timeout", "120s", "-buff_size", str(4 << 20),
        "-trace_stat", "-stf", "stat.csv", "-fd", "1", *(extra or []),
    ])  # fmt: skip
    started = time.perf_counter()
    uac.start()
    try:
        rc = uac.wait(150)
    finally:
        uac.stop()
    return rc, uac.workdir, time.perf_counter() - started


def sipp_stats(path: Path) -> dict[str, str]:
    rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


# -- figures ---------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


# -- part A: set-up latency ------------------------------------------------------


async def our_setup_calls(uas_port: int, n: int) -> tuple[list[float], list[float], int]:
    """n sequential calls via SipClient.invite; (setup times, invite() times, failures)."""
    setups: list[float] = []
    wall: list[float] = []
    failures = 0
    client = SipClient()
    await client.start()
    try:
        for _ in range(n):
            rtp = await RtpSession.open("127.0.0.1")
            try:
                t0 = time.perf_counter()
                result = await client.invite(
                    f"sip:bench@127.0.0.1:{uas_port}",
                    media=rtp,
                    ring_timeout_s=5,
                    proxy=("127.0.0.1", uas_port),
                )
                t1 = time.perf_counter()
                if result.call is None or result.setup_time_s is None:
                    failures += 1
                    continue
                setups.append(result.setup_time_s)
                wall.append(t1 - t0)
                await result.call.hangup()
                await result.call.aclose()
            finally:
                await rtp.close()
    finally:
        await client.close()
    return setups, wall, failures


def raw_setup_calls(uas_port: int, n: int) -> tuple[list[float], int]:
    """The same flow from a bare blocking socket: the floor of loopback + SIPp."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    lport = sock.getsockname()[1]
    dest = ("127.0.0.1", uas_port)
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    times: list[float] = []
    failures = 0

    def request(
        method: str, uri: str, cid: str, tag: str, to: str, cseq: int, body: str = ""
    ) -> bytes:
        branch = f"z9hG4bK{random.getrandbits(48):x}"
        head = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:raw@127.0.0.1:{lport}>;tag={tag}",
            f"To: {to}",
            f"Call-ID: {cid}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:raw@127.0.0.1:{lport}>",
        ]
        if body:
            head.append("Content-Type: application/sdp")
        head.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(head) + "\r\n\r\n" + body).encode()

    def until(status: int, cseq_method: str) -> str:
        while True:
            text = sock.recv(65535).decode(errors="replace")
            if text.startswith(f"SIP/2.0 {status} ") and cseq_method in text:
                return text

    def header(text: str, name: str) -> str:
        for line in text.split("\r\n"):
            if line.lower().startswith(name.lower() + ":"):
                return line.split(":", 1)[1].strip()
        return ""

    try:
        for i in range(n):
            cid = f"raw{random.getrandbits(64):x}{i}@127.0.0.1"
            tag = f"{random.getrandbits(32):x}"
            uri = f"sip:bench@127.0.0.1:{uas_port}"
            invite = request("INVITE", uri, cid, tag, f"<{uri}>", 1, sdp)
            try:
                t0 = time.perf_counter()
                sock.sendto(invite, dest)
                ok = until(200, "INVITE")
                t1 = time.perf_counter()
            except TimeoutError:
                failures += 1
                continue
            times.append(t1 - t0)
            to = header(ok, "To")
            contact = header(ok, "Contact").strip("<>").split(">")[0]
            sock.sendto(request("ACK", contact, cid, tag, to, 1), dest)
            sock.sendto(request("BYE", contact, cid, tag, to, 2), dest)
            try:
                until(200, "BYE")
            except TimeoutError:
                failures += 1
    finally:
        sock.close()
    return times, failures


def part_a(workdir: Path, n: int) -> None:
    c.console.rule("[bold]A. call set-up on loopback: INVITE sent -> 200 received")
    uas, port = start_uas(workdir, "uas_setup", limit=20000)
    try:
        asyncio.run(our_setup_calls(port, 10))  # warm-up: imports, first-call paths
        raw_setup_calls(port, 10)
        ours: list[float] = []
        ours_wall: list[float] = []
        raw: list[float] = []
        fails_ours = fails_raw = 0
        chunks = 4
        for k in range(chunks):
            size = n // chunks + (1 if k < n % chunks else 0)
            s, w, f = asyncio.run(our_setup_calls(port, size))
            ours += s
            ours_wall += w
            fails_ours += f
            r, f = raw_setup_calls(port, size)
            raw += r
            fails_raw += f
        rc, sdir, _ = run_sipp_uac(
            workdir,
            "uac_setup",
            port,
            calls=n,
            limit=1,
            rate=1000,
            extra=["-trace_rtt", "-rtt_freq", "1"],
        )
        rtts = []
        for path in sdir.glob("*_rtt.csv"):
            for row in csv.reader(path.read_text().splitlines()[1:], delimiter=";"):
                if len(row) >= 2:
                    rtts.append(float(row[1]) / 1000)
    finally:
        uas.stop()

    med_o, p95_o = statistics.median(ours), pct(ours, 0.95)
    med_r, p95_r = statistics.median(raw), pct(raw, 0.95)
    # Laid out by hand (fmt: skip): a table, one (label, figure) row per line.
    rows = [
        ("calls", f"{len(ours)} ours ({fails_ours} failed), "
                  f"{len(raw)} baseline ({fails_raw} failed)"),
        ("baseline (bare socket)", f"median {ms(med_r)}, p95 {ms(p95_r)}, max {ms(max(raw))}"),
        ("SipClient setup_time_s", f"median {ms(med_o)}, p95 {ms(p95_o)}, max {ms(max(ours))}"),
        ("  ratio to baseline", f"median {ratio(med_o, med_r)}, p95 {ratio(p95_o, p95_r)}"),
        ("  vs target (< 5 ms median)",
         f"{med_o * 1000 / TARGET_SETUP_MS:.2f} of the target"
         f" ({'met' if med_o * 1000 < TARGET_SETUP_MS else 'NOT met'})"),
        ("SipClient invite() call", f"median {ms(statistics.median(ours_wall))}, "
         f"p95 {ms(pct(ours_wall, 0.95))} (incl. building the INVITE and the ACK)"),
        ("reference: SIPp uac rtt",
         (f"median {statistics.median(rtts) * 1000:.0f} ms, p95 {pct(rtts, 0.95) * 1000:.0f} ms"
          f" over {len(rtts)} calls (1 ms resolution; exit {rc})") if rtts
         else f"no rtt data (exit {rc})"),
    ]  # fmt: skip
    c.figures("set-up latency", rows)


# -- part B: throughput ----------------------------------------------------------


class HangUpOnAnswer:
    def __init__(self, request: DialRequest) -> None:
        self.request = request

    async def ringing(self) -> None:
        return None

    async def answered(self) -> None:
        self.request.hangup.set()


async def our_throughput(
    uas_port: int, n: int, concurrency: int
) -> tuple[float, list[DialResult], list[float], float, list[float]]:
    """(wall seconds, results, per-call seconds, CPU seconds, completion times from t0)."""
    carrier = SipCarrier()
    sem = asyncio.Semaphore(concurrency)
    results: list[DialResult] = []
    durations: list[float] = []
    finished: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            request = DialRequest(
                call_id=f"b{i}",
                attempt=1,
                to_number=f"+1555{i:07d}",
                from_number="+15550199",
                ring_timeout_s=10,
                trunk=TrunkTarget("127.0.0.1", uas_port),
            )
            t0 = time.perf_counter()
            results.append(await carrier.place_call(request, HangUpOnAnswer(request)))
            now = time.perf_counter()
            durations.append(now - t0)
            finished.append(now)

    # warm-up
    for i in range(5):
        await one(-1 - i)
    results.clear()
    durations.clear()
    finished.clear()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        await carrier.close()
    return elapsed, results, durations, cpu, sorted(f - t0 for f in finished)


def steady_rate(done_at: list[float]) -> float:
    """Calls/s between the 5 % and 95 % completion marks: ramp-up and a stalled tail
    (a transaction waiting out Timer B/F, 32 s) left out."""
    if len(done_at) < 20:
        return len(done_at) / done_at[-1] if done_at and done_at[-1] > 0 else math.nan
    lo, hi = int(len(done_at) * 0.05), int(len(done_at) * 0.95)
    span = done_at[hi] - done_at[lo]
    return (hi - lo) / span if span > 0 else math.nan


def part_b(workdir: Path, n: int, concurrency: int, max_rate: float) -> None:
    c.console.rule("[bold]B. signalling throughput: answer, hang up at once")
    uas, port = start_uas(workdir, "uas_tput_ours", limit=n + 1000)
    try:
        elapsed, results, durations, cpu, done_at = asyncio.run(
            our_throughput(port, n, concurrency)
        )
    finally:
        uas.stop()
    completed = sum(r.outcome is Outcome.COMPLETED for r in results)
    failed = len(results) - completed
    wall_cps = completed / elapsed
    ours_cps = steady_rate(done_at)
    stalled = sum(d > 30.0 for d in durations)

    lines: list[tuple[str, str]] = []
    for label, rate, name in (
        ("baseline: SIPp uac at our rate", ours_cps, "same"),
        ("reference: SIPp uac offered max", max_rate, "max"),
    ):
        uas, port = start_uas(workdir, f"uas_tput_{name}", limit=n + 1000)
        try:
            rc, sdir, wall = run_sipp_uac(
                workdir, f"uac_tput_{name}", port, calls=n, limit=concurrency, rate=rate
            )
        finally:
            uas.stop()
        stats = sipp_stats(sdir / "stat.csv")
        got = float(stats.get("CallRate(C)", "nan") or "nan")
        ok = stats.get("SuccessfulCall(C)", "?")
        bad = stats.get("FailedCall(C)", "?")
        retrans = stats.get("Retransmissions(C)", "?")
        lines.append(
            (
                label,
                f"offered {rate:.0f}/s -> {got:.1f} calls/s ({ok} ok, {bad} failed,"
                f" {retrans} retransmissions, exit {rc}, wall {wall:.2f} s)",
            )
        )
        if name == "same":
            base_cps = got
        else:
            ceiling_cps = got

    errors: dict[str, int] = {}
    for r in results:
        if r.outcome is not Outcome.COMPLETED:
            key = f"{r.outcome} {r.sip_code} {r.error_message}"
            errors[key] = errors.get(key, 0) + 1
    # Laid out by hand (fmt: skip): a table, one (label, figure) row per line.
    rows = [
        ("calls", f"{len(results)} placed, {concurrency} in flight at most; "
                  f"{completed} completed, {failed} failed"),
        *lines[:1],
        ("SipCarrier", f"{ours_cps:.1f} calls/s steady (5-95 % of completions); "
                       f"{wall_cps:.1f} calls/s over the whole run ({elapsed:.2f} s wall)"),
        ("  calls stalled > 30 s", f"{stalled} (a request unanswered until Timer B/F gave up)"),
        ("  ratio to baseline", ratio(ours_cps, base_cps)),
        ("  ratio to SIPp's ceiling", f"{ratio(ours_cps, ceiling_cps)} (the reference below)"),
        ("  vs target (>= 200 calls/s)",
         f"{ours_cps / TARGET_CPS:.2f} of the target"
         f" ({'met' if ours_cps >= TARGET_CPS else 'NOT met'})"),
        ("  per call (INVITE..BYE 200)",
         f"median {ms(statistics.median(durations))}, p95 {ms(pct(durations, 0.95))}, "
         f"p99 {ms(pct(durations, 0.99))}, max {ms(max(durations))}"),
        ("  CPU of this process",
         f"{cpu:.2f} s = {cpu / max(1, len(results)) * 1000:.2f} ms per call"
                                  f" ({cpu / elapsed * 100:.0f} % of one core)"),
        *lines[1:],
    ]  # fmt: skip
    for key, count in sorted(errors.items(), key=lambda kv: -kv[1])[:5]:
        rows.append(("  failure", f"{count} x {key}"))
    c.figures("throughput", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="sequential calls for part A")
    parser.add_argument("--tput-calls", type=int, default=2000, help="calls for part B")
    parser.add_argument("--concurrency", type=int, default=200, help="calls in flight, part B")
    parser.add_argument("--sipp-max-rate", type=float, default=2000.0)
    parser.add_argument("--skip-setup", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    c.quiet_logs()
    c.header(
        "bench_sip: SIP call set-up and throughput vs SIPp (loopback)",
        sipp=subprocess.run([sipp_binary(), "-v"], capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[0:1]
        or "?",
        pid=os.getpid(),
    )
    with tempfile.TemporaryDirectory(prefix="bench_sip_") as tmp:
        workdir = Path(tmp)
        if not args.skip_setup:
            part_a(workdir, args.calls)
        if not args.skip_throughput:
            part_b(workdir, args.tput_calls, args.concurrency, args.sipp_max_rate)
    c.footer()


if __name__ == "__main__":
    main()

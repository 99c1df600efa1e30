"""Real SIP peers for the integration tests: SIPp scenarios and baresip as a phone.

Each peer runs as a subprocess in the test's own directory, on ports the OS just
handed out, and is always killed on exit. A missing binary is a test failure, not
a skip: CI must install `sip-tester` and `baresip-core`.
"""

from __future__ import annotations

import array
import math
import random
import shutil
import socket
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

SCENARIOS = Path(__file__).parent / "sip_scenarios"
SIPP_PCAPS = Path("/usr/share/sip-tester")


def require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(
            f"{binary!r} is not installed: apt-get install -y sip-tester baresip-core"
        )
    return path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(size: int = 4) -> int:
    """An even base port with `size` consecutive free UDP ports (RTP, RTCP, ...)."""
    for _ in range(200):
        base = random.randrange(20000, 60000, 2)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free UDP port block")


def _udp_bound(port: int) -> bool:
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1].split(":")[1] == f"{port:04X}" for line in lines)


def wait_bound(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _udp_bound(port):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing bound UDP port {port} within {timeout_s}s")


class Peer:
    """A subprocess that is killed on exit; its log is kept for assertion messages."""

    def __init__(self, argv: list[str], cwd: Path, log_name: str) -> None:
        self.argv = argv
        self.cwd = cwd
        self.log_path = cwd / log_name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        log.close()

    def wait(self, timeout_s: float = 30.0) -> int:
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

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        extra = list(self.cwd.glob("*_errors.log")) + list(self.cwd.glob("msgs.log"))
        for path in extra:
            text += f"\n--- {path.name}\n" + path.read_text(errors="replace")[-6000:]
        return text[-12000:]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Sipp(Peer):
    """SIPp as a UAS on 127.0.0.1; `scenario` is a file in sip_scenarios or `uas`."""

    def __init__(
        self,
        tmp: Path,
        scenario: str,
        *,
        timeout_s: int = 20,
        transport: str = "u1",
        calls: int = 1,
        extra: list[str] | None = None,
        pcaps: tuple[str, ...] = (),
    ) -> None:
        self.port = free_udp_port()
        self.media_port = free_port_block(4)
        if scenario == "uas":
            chosen = ["-sn", "uas", "-rtp_echo"]
        else:
            shutil.copy(SCENARIOS / scenario, tmp / scenario)
            chosen = ["-sf", scenario]
        for pcap in pcaps:
            shutil.copy(SIPP_PCAPS / pcap, tmp / pcap)
        # Laid out by hand (fmt: skip): each flag beside its value.
        argv = [
            require("sipp"), *chosen, "-i", "127.0.0.1", "-p", str(self.port),
            "-mi", "127.0.0.1", "-mp", str(self.media_port), "-t", transport,
            "-nostdin", "-m", str(calls), "-timeout", f"{timeout_s}s", "-timeout_error",
            "-trace_err", "-trace_msg", "-message_file", "msgs.log", *(extra or []),
        ]  # fmt: skip
        super().__init__(argv, tmp, "sipp.out")

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> None:
        super().start()
        if "-t" in self.argv and self.argv[self.argv.index("-t") + 1].startswith("t"):
            time.sleep(0.3)
        else:
            wait_bound(self.port)


def write_wav(path: Path, pcm: bytes, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def read_wav(path: Path) -> tuple[bytes, int]:
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes()), wav.getframerate()


def _baresip_modules() -> Path:
    out = subprocess.run(
        ["dpkg", "-L", "baresip-core"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        if line.endswith("/g711.so"):
            return Path(line).parent
    raise RuntimeError("baresip-core's g711.so not found")


class Baresip(Peer):
    """baresip that auto-answers, plays `source.wav` and records what it hears to rec/."""

    def __init__(self, tmp: Path, source_pcm: bytes, *, quit_after_s: int = 30) -> None:
        require("baresip")
        self.port = free_udp_port()
        rtp = free_port_block(20)
        home = tmp / "bot"
        (home / "rec").mkdir(parents=True)
        write_wav(home / "source.wav", source_pcm)
        config = f"""poll_method epoll
sip_listen 127.0.0.1:{self.port}
sip_trans_def udp
dns_server 127.0.0.1:53
audio_player aubridge,nowhere
audio_source aufile,source.wav
audio_alert aufile,/dev/null
audio_srate 8000
audio_channels 1
rtp_ports {rtp}-{rtp + 19}
module_path {_baresip_modules()}
module g711.so
module aufile.so
module aubridge.so
module sndfile.so
module account.so
module_app menu.so
snd_path rec
"""
        (home / "config").write_text(config)
        (home / "accounts").write_text(
            f"<sip:bot@127.0.0.1:{self.port}>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA\n"
        )
        argv = [require("baresip"), "-f", ".", "-n", "127.0.0.1", "-t", str(quit_after_s)]
        super().__init__(argv, home, "baresip.log")
        self.home = home

    def start(self) -> None:
        super().start()
        wait_bound(self.port)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def recordings(self, suffix: str) -> Iterator[Path]:
        return iter(sorted((self.home / "rec").glob(f"*-{suffix}.wav")))


def chirp(seconds: float = 1.0, rate: int = 8000) -> bytes:
    """A chirp (300 -> 1500 Hz) with a soft envelope: easy to align, hard to fake."""
    n = int(seconds * rate)
    samples = array.array("h")
    for i in range(n):
        t = i / rate
        phase = 2 * math.pi * (300 * t + 600 * t * t / seconds)
        envelope = min(1.0, i / 400, (n - i) / 400)
        samples.append(int(9000 * envelope * math.sin(phase)))
    return samples.tobytes()


def _samples(pcm: bytes) -> array.array[int]:
    out = array.array("h")
    out.frombytes(pcm[: len(pcm) & ~1])
    return out


def best_correlation(sent: bytes, received: bytes, search: int = 20) -> float:
    """Normalised correlation of `sent` against `received`, aligned by signal onset."""
    a, b = _samples(sent), _samples(received)

    def onset(x: array.array[int]) -> int:
        return next((i for i, v in enumerate(x) if abs(v) > 300), -1)

    oa, ob = onset(a), onset(b)
    if oa < 0 or ob < 0:
        return 0.0
    best = 0.0
    for lag in range(ob - oa - search, ob - oa + search + 1):
        pairs = [(a[i], b[i + lag]) for i in range(len(a)) if 0 <= i + lag < len(b)]
        if len(pairs) < min(len(a), len(b)) // 2:
            continue
        sab = sum(x * y for x, y in pairs)
        saa = sum(x * x for x, _ in pairs)
        sbb = sum(y * y for _, y in pairs)
        if saa and sbb:
            best = max(best, sab / math.sqrt(saa * sbb))
    return best

"""SipCarrier through a real proxy: Kamailio challenges, record-routes and relays to SIPp.

    SipCarrier --INVITE--> Kamailio --407--> (ACK) --INVITE+Proxy-Authorization-->
    Kamailio --Record-Route + INVITE--> SIPp UAS --180/200 (Record-Route copied)-->
    ACK and BYE with a Route header --> Kamailio (loose_route) --> SIPp

Kamailio (Debian `kamailio`, 5.6) runs in the foreground (`-DD -E`) on a free
loopback port with the config from `tests/kamailio/kamailio.cfg` (placeholders
filled in, written to tmp_path) and its own runtime directory; it authenticates one
static user with `pv_proxy_authenticate` (no database) and logs a `CFTRACE` line for
every request and reply it handles. The SIPp scenario (`tests/kamailio/
uas_record_route.xml`) fails unless the INVITE carries a Record-Route, and echoes it
in its 180/200. The test then checks, from Kamailio's log and SIPp's message log,
that the ACK and the BYE were loose-routed by the proxy (their top Via is
Kamailio's). A missing `kamailio` or `sipp` binary is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from pathlib import Path

from tests.peers import Peer, free_port_block, free_udp_port, require, wait_bound

from callfleet.telephony.carrier import DialRequest, DialResult, EndedBy, Outcome, TrunkTarget
from callfleet.telephony.sip_carrier import SipCarrier

KAMAILIO_DIR = Path(__file__).parent.parent / "kamailio"
USER, PASSWORD = "alice", "s3cret"


def _require_kamailio() -> str:
    path = shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
    )
    if path is None:
        raise RuntimeError(
            "'kamailio' is not installed: apt-get install -y --no-install-recommends kamailio"
        )
    return path


class Kamailio(Peer):
    """Kamailio in the foreground on 127.0.0.1:<free port>, relaying INVITEs to `uas_port`."""

    def __init__(self, tmp: Path, uas_port: int) -> None:
        binary = _require_kamailio()
        self.port = free_udp_port()
        home = tmp / "kamailio"
        (home / "run").mkdir(parents=True)
        config = (KAMAILIO_DIR / "kamailio.cfg").read_text()
        for key, value in {
            "@KAM_PORT@": str(self.port),
            "@UAS_HOST@": f"127.0.0.1:{uas_port}",
            "@USER@": USER,
            "@PASSWORD@": PASSWORD,
        }.items():
            config = config.replace(key, value)
        leftover = re.findall(r"@[A-Z_]+@", config)
        assert not leftover, f"unfilled placeholders in kamailio.cfg: {leftover}"
        (home / "kamailio.cfg").write_text(config)
        # kamailio's flags stay beside their values (fmt: skip).
        argv = [
            binary, "-f", "kamailio.cfg", "-DD", "-E", "-Y", str(home / "run"),
            "-w", str(home), "-m", "32", "-M", "4",
        ]  # fmt: skip
        super().__init__(argv, home, "kamailio.log")

    def start(self) -> None:
        super().start()
        try:
            wait_bound(self.port, timeout_s=10.0)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"Kamailio did not start:\n{self.log()}") from None

    def trace(self) -> list[str]:
        return [
            line.split("CFTRACE ", 1)[1]
            for line in self.log_path.read_text(errors="replace").splitlines()
            if "CFTRACE " in line
        ]


class SippUas(Peer):
    """SIPp running tests/kamailio/uas_record_route.xml for one call."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_udp_port()
        media_port = free_port_block(4)
        home = tmp / "sipp"
        home.mkdir()
        shutil.copy(KAMAILIO_DIR / "uas_record_route.xml", home / "uas_record_route.xml")
        # sipp's flags stay beside their values (fmt: skip).
        argv = [
            require("sipp"), "-sf", "uas_record_route.xml", "-i", "127.0.0.1",
            "-p", str(self.port), "-mi", "127.0.0.1", "-mp", str(media_port), "-rtp_echo",
            "-nostdin", "-m", "1", "-timeout", "15s", "-timeout_error",
            "-trace_err", "-trace_msg", "-message_file", "msgs.log",
            "-trace_logs", "-log_file", "actions.log",
        ]  # fmt: skip
        super().__init__(argv, home, "sipp.out")

    def start(self) -> None:
        super().start()
        wait_bound(self.port)

    def received(self, method: str) -> list[str]:
        """The requests of `method` SIPp received, as raw text."""
        path = self.cwd / "msgs.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        blocks = re.split(r"^-{10,}.*$", text, flags=re.M)
        out = []
        for block in blocks:
            if "message received" not in block:
                continue
            body = block.split("bytes :", 1)[-1].lstrip()
            if body.startswith(f"{method} "):
                out.append(body)
        return out


class _Events:
    def __init__(self, request: DialRequest, hangup_after_s: float) -> None:
        self.seen: list[str] = []
        self._request = request
        self._after = hangup_after_s

    async def ringing(self) -> None:
        self.seen.append("ringing")

    async def answered(self) -> None:
        self.seen.append("answered")
        asyncio.get_running_loop().call_later(self._after, self._request.hangup.set)


def _place_call(port: int, password: str) -> tuple[DialResult, list[str], float]:
    async def run() -> tuple[DialResult, list[str], float]:
        carrier = SipCarrier()
        request = DialRequest(
            call_id="k1",
            attempt=1,
            to_number="+1 555 0100",
            from_number="+15550199",
            ring_timeout_s=5.0,
            trunk=TrunkTarget("127.0.0.1", port, username=USER, password=password),
        )
        events = _Events(request, hangup_after_s=0.3)
        started = time.monotonic()
        try:
            async with asyncio.timeout(15):
                result = await carrier.place_call(request, events)
            await asyncio.sleep(0.1)  # let retransmitted finals be re-ACKed / answered
        finally:
            await carrier.close()
        return result, events.seen, time.monotonic() - started

    return asyncio.run(run())


def _top_via(message: str) -> str:
    for line in message.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("via", "v"):
            return value.split(",")[0].strip()
    return ""


def test_call_through_kamailio_auth_and_record_route(tmp_path: Path) -> None:
    with SippUas(tmp_path) as sipp, Kamailio(tmp_path, sipp.port) as kamailio:
        result, seen, _ = _place_call(kamailio.port, PASSWORD)
        rc = sipp.wait(15)
        time.sleep(0.1)  # Kamailio logs the BYE's 200 as it relays it
        trace = kamailio.trace()
        detail = f"\nKamailio:\n{kamailio.log()[-6000:]}\nSIPp:\n{sipp.log()}"
        assert rc == 0, f"SIPp exit code {rc}{detail}"

        assert (result.outcome, result.ended_by, result.sip_code) == (
            Outcome.COMPLETED,
            EndedBy.ASSISTANT,
            200,
        ), f"{result}{detail}"
        assert seen == ["ringing", "answered"]

        # 407 for the first INVITE, then the authenticated one is record-routed and relayed.
        assert any(t.startswith("challenge 407") for t in trace), detail
        assert f"authenticated {USER}" in trace, detail
        invites = [t for t in trace if t.startswith("request INVITE")]
        assert len(invites) >= 2, detail
        assert any(t.startswith("reply 200 INVITE record-route=[<sip:127.0.0.1") for t in trace)

        # ACK and BYE follow the Record-Route: a Route header naming the proxy, loose-routed.
        proxy_route = f"sip:127.0.0.1:{kamailio.port};lr"
        for method in ("ACK", "BYE"):
            requests = [
                t for t in trace if t.startswith(f"request {method} ") and "totag=[]" not in t
            ]
            assert any(proxy_route in t for t in requests), f"no routed {method}{detail}"
            assert any(t.startswith(f"loose-routed {method} ") for t in trace), detail
        assert any(t.startswith("reply 200 BYE") for t in trace), detail
        assert not any(t.startswith(("no-route", "insane")) for t in trace), detail

        # ...and SIPp got them from the proxy: their top Via is Kamailio's.
        for method in ("ACK", "BYE"):
            received = sipp.received(method)
            assert received, f"SIPp saw no {method}{detail}"
            for message in received:
                assert f"127.0.0.1:{kamailio.port}" in _top_via(message), message


def test_wrong_password_is_rejected_by_the_proxy(tmp_path: Path) -> None:
    uas_port = free_udp_port()  # nothing listens: no INVITE may get past the proxy
    with Kamailio(tmp_path, uas_port) as kamailio:
        result, seen, elapsed = _place_call(kamailio.port, "wrong")
        trace = kamailio.trace()
    detail = f"\nKamailio:\n{kamailio.log()[-6000:]}"
    assert result.outcome is not Outcome.COMPLETED, f"{result}{detail}"
    assert result.sip_code == 407, f"{result}{detail}"
    assert seen == []
    assert elapsed < 5.0
    assert not any(t.startswith("authenticated") for t in trace), detail
    # one challenge per INVITE: the first, and the retry with the wrong digest
    assert sum(t.startswith("challenge 407") for t in trace) == 2, detail

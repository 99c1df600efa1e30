"""`SimulatorConfig`: how the SIP phone simulator listens, how fast its phones behave."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from callfleet.telephony.sip.transaction import SipTimers

__all__ = ["SimulatorConfig"]


@dataclass(frozen=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port; see `PhoneSimulator.address`."""
    transport: str = "udp"
    """`udp` or `tcp`."""
    time_scale: float = 1.0
    """Multiplies every ring, talk and greeting time; 0 is the fast mode for load tests."""
    rtp_port_range: tuple[int, int] = (40000, 49999)
    advertised_host: str | None = None
    """The address put in Contact and SDP; defaults to the bound host."""
    username: str | None = None
    password: str | None = None
    """With both set, every new INVITE must answer a 407 digest challenge."""
    realm: str = "callfleet-simulator"
    max_concurrent: int | None = None
    """Calls beyond this many live ones get 503 with `Retry-After: overload_retry_after_s`."""
    overload_retry_after_s: int = 1
    fast_hold_s: float = 0.2
    """Fast mode: how long an answered call stays up (silence) before our BYE."""
    beep_s: float = 0.5
    """Length of the voicemail beep (not scaled: beep detectors need a real tone)."""
    voicemail_max_s: float = 120.0
    """Longest message a voicemail box records (scaled)."""
    max_ring_s: float = 180.0
    """A no-answer phone gives up with 480 after this many real seconds."""
    record_dir: Path | None = None
    """If set, what each answered call heard is also written there as a WAV file."""
    keep_recordings: bool = True
    """Keep `record_dir`'s WAVs when the simulator closes. The server's built-in
    simulator sets False (`CALLFLEET_SIMULATOR_KEEP_RECORDINGS`): its WAVs live only
    while the server runs, and the previous run's are cleared at start."""
    voice_cache_dir: Path | None = None
    """If set, the people's rendered lines are kept there (`voices.use_cache_dir`)."""
    transfer_hangup_s: float = 2.0
    """After a REFER's NOTIFY, our BYE if the caller has not hung up (not scaled)."""
    timers: SipTimers = field(default_factory=SipTimers)

    def __post_init__(self) -> None:
        if self.transport.lower() not in ("udp", "tcp"):
            raise ValueError(f"transport must be udp or tcp, not {self.transport!r}")
        if self.time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password, or neither")

"""The composition root: the one place that builds callfleet's parts and joins them.

Everything else receives its collaborators; only this module knows which concrete
part fills each port. The order follows the data's way:

    settings → store (`Database`) → talker (the AI agent, `agent.phone.AgentLine`)
    → carrier (SIP trunks, or the built-in phone simulator) → dispatcher and
    webhook sender (in an API process) or a `CallWorker` (in a worker process).

`callfleet serve`, `callfleet worker`, `callfleet demo` and the tests build their
processes here, so a process never assembles itself differently from another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from fastapi import FastAPI

from callfleet.api.app import Services
from callfleet.api.app import create_app as create_api
from callfleet.config import Settings
from callfleet.dashboard import install_dashboard
from callfleet.dispatch.service import Dispatcher
from callfleet.net.trunks import TrunkPolicy
from callfleet.simulator.carrier import SimulatedCarrier
from callfleet.simulator.sip_server import SimulatorConfig, SipSimulatorCarrier
from callfleet.store.db import Database
from callfleet.store.secrets import SecretBox
from callfleet.telephony.carrier import Carrier
from callfleet.telephony.line import Talker
from callfleet.telephony.router import CarrierRouter
from callfleet.telephony.sip.config import SipLimits
from callfleet.telephony.sip_carrier import SipCarrier, SipCarrierConfig
from callfleet.webhooks.sender import WebhookSender
from callfleet.worker import CallWorker

__all__ = ["build_carrier", "build_talker", "build_worker", "create_app"]


def build_talker(settings: Settings) -> Talker | None:
    """The AI agent for answered SIP calls, loading in the background from here on;
    None when `settings.agent_on_calls` says nobody talks on the line."""
    if not settings.agent_on_calls:
        return None
    from callfleet.agent.options import ProviderSettings
    from callfleet.agent.phone import AgentLine
    from callfleet.agent.runtime import AgentRuntime

    providers = replace(
        ProviderSettings.from_settings(settings), extra=settings.speech_provider_extra
    )
    runtime = AgentRuntime(
        providers,
        allow_private_urls=settings.webhook_allow_private,
        pipecat_log_level=settings.pipecat_log_level,
    )
    return AgentLine(runtime)


def build_carrier(settings: Settings) -> Carrier:
    """Calls with a trunk go out over SIP, to addresses the operator's trunk policy
    allows; calls without one go over SIP to the built-in phone simulator (ours, so
    exempt). `simulator-nomedia` skips SIP and audio entirely."""
    return _carrier_and_readiness(settings)[0]


Readiness = Callable[[], str | None]


def _carrier_and_readiness(settings: Settings) -> tuple[Carrier, Readiness | None]:
    """The carrier, and the check that says whether its talker (the agent) can speak
    yet: the dispatcher and the worker take no call until it says None."""
    if settings.carrier == "simulator-nomedia":
        return SimulatedCarrier(time_scale=settings.simulator_time_scale), None
    talker = build_talker(settings)
    sip = SipCarrier(
        SipCarrierConfig(
            bind_host=settings.sip_bind_host,
            advertised_host=settings.sip_advertised_host,
            rtp_port_range=(settings.rtp_port_min, settings.rtp_port_max),
            recordings_dir=settings.recordings_dir,
            sip_limits=SipLimits(
                trusted_peers=settings.sip_trusted_peer_list,
                max_server_transactions=settings.sip_max_transactions,
                max_content_length=settings.sip_max_content_length,
                max_tcp_connections=settings.sip_max_tcp_connections,
                tcp_idle_timeout_s=settings.sip_tcp_idle_timeout_s,
            ),
        ),
        talker=talker,
        trunk_policy=TrunkPolicy.from_settings(settings),
    )
    simulator = SipSimulatorCarrier(
        SimulatorConfig(
            time_scale=settings.simulator_time_scale,
            record_dir=settings.data_dir / "simulator",
            keep_recordings=settings.simulator_keep_recordings,
            voice_cache_dir=settings.data_dir / "voices",
        ),
        sip=sip,
    )
    return CarrierRouter(simulator, sip), (talker.not_ready if talker is not None else None)


def create_app(
    settings: Settings,
    *,
    dispatch: bool = True,
    carrier: Carrier | None = None,
    db: Database | None = None,
) -> FastAPI:
    """The API, and the dashboard at `/`; with `dispatch` (what `callfleet serve` does)
    the same process also runs the dispatcher on `carrier` (default: `build_carrier`)
    and the webhook sender, so one process is a whole callfleet."""

    def services(database: Database) -> Services:
        chosen, readiness = (carrier, None) if carrier else _carrier_and_readiness(settings)
        dispatcher = Dispatcher(database, settings, chosen, readiness=readiness)
        return Services(dispatcher, WebhookSender(database, settings))

    app = create_api(settings, db=db, services=services if dispatch else None)
    install_dashboard(app, secret_material=_secret_material(settings))
    return app


def _secret_material(settings: Settings) -> str:
    """The server's secret (`CALLFLEET_SECRET_KEY`, else the data directory's key file,
    created on first use), from which the dashboard derives its session keys."""
    if settings.secret_key:
        return settings.secret_key.get_secret_value()
    SecretBox.from_settings(settings)  # creates `secret.key` with owner-only permissions
    return (Path(settings.data_dir) / "secret.key").read_text().strip()


def build_worker(
    settings: Settings,
    *,
    concurrency: int | None = None,
    metrics_port: int | None = None,
) -> CallWorker:
    """A `callfleet worker` process on the configured carrier; it hard-stops 30 s past
    its shutdown deadline."""
    carrier, readiness = _carrier_and_readiness(settings)
    return CallWorker(
        settings,
        carrier,
        readiness=readiness,
        concurrency=concurrency,
        metrics_port=metrics_port,
        hard_stop_s=settings.worker_shutdown_deadline_s + 30,
    )

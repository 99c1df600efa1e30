"""The FastAPI application: routes, error envelope, and (optionally) the dispatcher.

`create_app(settings)` builds the app; with `dispatch=True` (what `callfleet serve`
does) its lifespan also runs the dispatcher and the webhook sender on the same
event loop, so one process is a whole callfleet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import structlog
from fastapi import FastAPI

from callfleet import __version__
from callfleet.api.errors import install_error_handlers
from callfleet.api.routes import analysis, batches, calls, dnc, numbers, ops, trunks, webhooks
from callfleet.api.runtime import Runtime
from callfleet.config import Settings
from callfleet.dispatch.service import Dispatcher
from callfleet.simulator.carrier import SimulatedCarrier
from callfleet.simulator.sip_server import SimulatorConfig, SipSimulatorCarrier
from callfleet.store.db import Database
from callfleet.store.migrate import migrate
from callfleet.telephony.carrier import Carrier
from callfleet.telephony.router import CarrierRouter
from callfleet.telephony.sip.carrier import SipCarrier, SipCarrierConfig
from callfleet.webhooks.sender import WebhookSender

__all__ = ["create_app"]

log = structlog.get_logger(__name__)


def make_carrier(settings: Settings) -> Carrier:
    """Calls with a trunk go out over SIP; calls without one go over SIP to the
    built-in phone simulator. `simulator-nomedia` skips SIP and audio entirely.

    Answered SIP calls get the AI agent, loaded in the background from here on,
    unless `agent_enabled` is off or the simulator runs in its fast mode (time
    scale 0), where nobody on the line speaks.
    """
    if settings.carrier == "simulator-nomedia":
        return SimulatedCarrier(time_scale=settings.simulator_time_scale)
    media = None
    if settings.agent_enabled and settings.simulator_time_scale > 0:
        from callfleet.agent.options import ProviderSettings
        from callfleet.agent.runtime import AgentRuntime

        providers = replace(
            ProviderSettings.from_settings(settings), extra=settings.speech_provider_extra
        )
        media = AgentRuntime(providers, allow_private_urls=settings.webhook_allow_private)
    sip = SipCarrier(
        SipCarrierConfig(
            bind_host=settings.sip_bind_host,
            advertised_host=settings.sip_advertised_host,
            rtp_port_range=(settings.rtp_port_min, settings.rtp_port_max),
            recordings_dir=settings.recordings_dir,
        ),
        media=media,
    )
    simulator = SipSimulatorCarrier(
        SimulatorConfig(
            time_scale=settings.simulator_time_scale,
            record_dir=settings.data_dir / "simulator",
        ),
        sip=sip,
    )
    return CarrierRouter(simulator, sip)


def create_app(
    settings: Settings,
    *,
    dispatch: bool = True,
    carrier: Carrier | None = None,
    db: Database | None = None,
) -> FastAPI:
    database = db or Database(settings.sqlalchemy_url)
    runtime = Runtime(settings=settings, db=database)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, database)
        runtime.loop = asyncio.get_running_loop()
        if dispatch:
            chosen = carrier or make_carrier(settings)
            log.info("carrier", carrier=chosen.describe())
            runtime.dispatcher = Dispatcher(database, settings, chosen)
            runtime.sender = WebhookSender(database, settings)
            await runtime.dispatcher.start()
            await runtime.sender.start()
        try:
            yield
        finally:
            if runtime.dispatcher is not None:
                await runtime.dispatcher.stop()
                close = getattr(runtime.dispatcher.carrier, "close", None)
                if close is not None:
                    await close()
            if runtime.sender is not None:
                await runtime.sender.stop()
            if db is None:
                database.dispose()

    app = FastAPI(
        title="callfleet",
        version=__version__,
        summary="Self-hosted AI phone calls in bulk, behind a drop-in batch-calling API.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    for module in (batches, calls, analysis, numbers, trunks, dnc, webhooks, ops):
        app.include_router(module.router)
    return app

"""Service-style use: what a web service does with outdial, minus the web framework.

API handlers call the :class:`CampaignService` (create, import, start, pause...);
a dialer runs next to them in a background thread on the real clock; provider
webhooks are fed to ``service.apply_event`` (here the simulator plays the
provider, with calls that last a fraction of a second); live progress is read
from the event bus's async iterator, as a websocket or SSE endpoint would.

``python examples/service_style.py``: stores in ``service-demo.sqlite`` when the
``sql`` extra is installed, in memory otherwise.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog

from outdial import AgentSettings, CampaignService, CampaignStatus, Dialer, EventBus, RetryPolicy
from outdial.events import CampaignStatusChanged, ProgressUpdated
from outdial.ports import SystemClock
from outdial.retry import Fixed
from outdial.simulation import Constant, SimulatedProvider, SimulationProfile, sample_numbers

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

QUICK_CALLS = SimulationProfile(
    ring_seconds=Constant(0.05),
    talk_seconds=Constant(0.1),
    voicemail_after_seconds=Constant(0.05),
    voicemail_seconds=Constant(0.05),
    no_answer_seconds=Constant(0.1),
    fail_seconds=Constant(0.02),
)


def repository() -> Any:
    try:
        sql = importlib.import_module("outdial.sql")
    except ImportError:
        from outdial.testing import InMemoryRepository

        return InMemoryRepository()
    path = Path("service-demo.sqlite")
    path.unlink(missing_ok=True)
    return sql.connect(f"sqlite:///{path}", create=True)


async def follow(bus: EventBus, campaign_id: str) -> None:
    """What an SSE endpoint would stream to the browser."""
    last = -1
    async for event in bus.subscribe(campaign_id=campaign_id):
        if isinstance(event, ProgressUpdated):
            c = event.counters
            if c.finished != last:
                print(f"progress: {c.finished}/{c.total} done, {c.in_flight} in flight")
                last = c.finished
        elif isinstance(event, CampaignStatusChanged):
            print(f"status: {event.old.value} -> {event.new.value}")
            if event.new.final:
                return


async def main(recipients: int = 40) -> None:
    repo = repository()
    clock = SystemClock()
    bus = EventBus()
    provider = SimulatedProvider(clock, QUICK_CALLS, seed=3)
    service = CampaignService(repo, clock=clock, events=bus, providers=provider)

    # POST /campaigns (the wizard's final step)
    campaign = service.create(
        "acme",
        name="Appointment reminders",
        agent=AgentSettings(provider="simulated", prompt_template="Hi {first_name}"),
        concurrency_limit=5,
        retry_policy=RetryPolicy(max_attempts=2, backoff=Fixed(timedelta(seconds=0.5))),
        recipients=[
            {"phone_number": n, "first_name": f"Patient {i}"}
            for i, n in enumerate(sample_numbers(recipients, seed=8))
        ],
    )
    dialer = Dialer(repo, provider, clock=clock, events=bus)
    service._on_change = dialer.wake  # API actions wake the dialer at once
    watcher = asyncio.create_task(follow(bus, campaign.id))
    await asyncio.sleep(0)  # let the watcher subscribe
    with dialer:  # start(); stop() on exit
        service.start("acme", campaign.id)  # POST /campaigns/{id}/start
        await asyncio.wait_for(watcher, timeout=60)
    details = service.get("acme", campaign.id)  # GET /campaigns/{id}
    assert details.campaign.status is CampaignStatus.COMPLETED
    s = details.stats
    print(f"done: {s.completed} completed, {s.failed} failed, answered {s.answered}")


if __name__ == "__main__":
    asyncio.run(main())

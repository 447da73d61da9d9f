"""Forecasts: run a whole campaign in virtual time and look at what happened.

>>> from outdial.simulation import simulate   # doctest: +SKIP
>>> result = simulate(recipients=10_000, concurrency=20, max_attempts=3)  # doctest: +SKIP

``simulate`` builds everything a real run has (the campaign service, the
engine, a dialer, an in-memory repository) around a :class:`VirtualClock` and a
seeded :class:`SimulatedProvider`, so the forecast obeys exactly the rules a
real campaign would: business hours, calling rules, retries, caps.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from outdial.calendar import BusinessHours
from outdial.campaign import AgentSettings, Campaign
from outdial.dialer import Dialer
from outdial.engine import EngineConfig
from outdial.events import CallEnded, CallPlaced, DomainEvent, EventBus
from outdial.retry import Fixed, RetryPolicy
from outdial.service import CampaignService, CampaignStats, RecipientInput
from outdial.simulation.clock import VirtualClock
from outdial.simulation.provider import SimulatedProvider, SimulationProfile

__all__ = ["SimulationResult", "sample_numbers", "simulate"]

_DEFAULT_START = datetime(2026, 11, 23, 13, 0, tzinfo=timezone.utc)  # a Monday, 08:00 New York


@attrs.frozen
class SimulationResult:
    """What a simulated campaign did, ready for a notebook."""

    campaign: Campaign
    stats: CampaignStats
    started_at: datetime
    finished_at: datetime
    calls_placed: int
    max_in_flight: int
    #: (instant, calls in flight) at every change: a step function to plot
    timeline: tuple[tuple[datetime, int], ...]
    #: attempts per outcome (every attempt, not only the last one per recipient)
    attempt_outcomes: dict[str, int]

    @property
    def duration(self) -> timedelta:
        return self.finished_at - self.started_at

    def summary(self) -> str:
        s = self.stats
        lines = [
            f"campaign {self.campaign.name!r}: {self.campaign.status.value}",
            f"recipients {s.total}: {s.completed} completed, {s.failed} failed, "
            f"{s.skipped} skipped",
            f"attempts {s.attempts}, answered {s.answered}"
            + (f" (answer rate {s.answer_rate:.1%})" if s.answer_rate is not None else ""),
            f"virtual duration {self.duration}, peak calls in flight {self.max_in_flight}",
        ]
        if s.average_duration_seconds is not None:
            lines.append(f"average answered call {s.average_duration_seconds:.0f} s")
        lines.append(
            "by outcome: " + ", ".join(f"{k} {v}" for k, v in sorted(self.attempt_outcomes.items()))
        )
        return "\n".join(lines)

    def timeline_rows(self) -> list[dict[str, Any]]:
        """The timeline as rows (``pandas.DataFrame(result.timeline_rows())``)."""
        return [{"at": at, "in_flight": n} for at, n in self.timeline]


def sample_numbers(count: int, *, seed: int = 0, area_codes: Sequence[str] = ("212",)) -> list[str]:
    """``count`` distinct, valid-looking US numbers in the given area codes (seeded)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        area = area_codes[rng.randrange(len(area_codes))]
        number = f"+1{area}{rng.randrange(2, 10)}{rng.randrange(0, 1_000_000):06d}"
        if number not in seen:
            seen.add(number)
            out.append(number)
    return out


def simulate(
    recipients: int | Iterable[str | RecipientInput] = 1000,
    *,
    start: datetime = _DEFAULT_START,
    business_hours: BusinessHours | None = None,
    concurrency: int = 10,
    max_attempts: int = 3,
    retry_policy: RetryPolicy | None = None,
    profile: SimulationProfile | None = None,
    seed: int = 0,
    rule_set: str | None = None,
    calls_per_minute: float | None = None,
    daily_cap: int | None = None,
    until: datetime | None = None,
    engine_config: EngineConfig | None = None,
) -> SimulationResult:
    """Run a campaign to its end in virtual time and return what happened.

    ``recipients`` is a count (numbers are generated in New York) or the
    numbers / :class:`RecipientInput` values themselves. Business hours default
    to 09:00-17:00 New York on weekdays; retries to a fixed hour between
    attempts.
    """
    clock = VirtualClock(start)
    from outdial.testing import InMemoryRepository

    repo = InMemoryRepository()
    provider = SimulatedProvider(clock, profile or SimulationProfile(), seed=seed)
    bus = EventBus(keep=0)
    timeline: list[tuple[datetime, int]] = [(start, 0)]
    outcomes: dict[str, int] = {}
    live = 0
    peak = 0
    placed: set[str] = set()

    def track(event: DomainEvent) -> None:
        nonlocal live, peak
        if isinstance(event, CallPlaced):
            placed.add(event.attempt_id)
            live += 1
            peak = max(peak, live)
        elif isinstance(event, CallEnded):
            if event.attempt_id in placed:
                placed.discard(event.attempt_id)
                live -= 1
            key = event.outcome.value if event.outcome is not None else "not_placed"
            outcomes[key] = outcomes.get(key, 0) + 1
        else:
            return
        if timeline[-1][0] == event.at:
            timeline[-1] = (event.at, live)
        else:
            timeline.append((event.at, live))

    bus.on(track)
    service = CampaignService(repo, clock=clock, events=bus, providers=provider)
    if isinstance(recipients, int):
        inputs: list[RecipientInput] = [
            RecipientInput(n, first_name=f"Person {i}")
            for i, n in enumerate(sample_numbers(recipients, seed=seed))
        ]
    else:
        inputs = [r if isinstance(r, RecipientInput) else RecipientInput(r) for r in recipients]
    hours = business_hours or BusinessHours.weekly(
        "America/New_York", {"mon-fri": [("09:00", "17:00")]}
    )
    policy = retry_policy or RetryPolicy(
        max_attempts=max_attempts, backoff=Fixed(timedelta(hours=1))
    )
    campaign = service.create(
        "simulation",
        name="Simulated campaign",
        agent=AgentSettings(provider="simulated"),
        business_hours=hours,
        timezone=hours.timezone,
        concurrency_limit=concurrency,
        retry_policy=policy,
        rule_set=rule_set,
        calls_per_minute=calls_per_minute,
        daily_cap=daily_cap,
        max_recipients=max(len(inputs), 1),
        recipients=inputs,
    )
    service.start("simulation", campaign.id)
    from outdial.engine import Engine

    dialer = Dialer(
        repo,
        provider,
        clock=clock,
        events=bus,
        rng=random.Random(seed),
        engine=Engine(engine_config),
        worker_id="simulator",
    )
    summary = dialer.run_until_idle(until=until)
    details = service.get("simulation", campaign.id)
    return SimulationResult(
        campaign=details.campaign,
        stats=details.stats,
        started_at=start,
        finished_at=details.campaign.completed_at or summary.finished_at,
        calls_placed=summary.calls_placed,
        max_in_flight=peak,
        timeline=tuple(timeline),
        attempt_outcomes=outcomes,
    )

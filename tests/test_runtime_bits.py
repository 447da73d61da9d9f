"""Smaller behaviours: test calls, the async long-running mode, event streams,
templates, serialization and the command line."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from outdial import (
    AgentSettings,
    AsyncDialer,
    CallEvent,
    CallOutcome,
    CallStatus,
    Campaign,
    CampaignService,
    CampaignStatus,
    ConfigurationError,
    EventBus,
    RetryPolicy,
)
from outdial.events import CampaignStatusChanged, ProgressUpdated
from outdial.ports import SystemClock
from outdial.serialization import from_json, to_json, unstructure
from outdial.simulation import sample_numbers
from outdial.templates import placeholders, render
from outdial.testing import FakeProvider, InMemoryRepository, VirtualClock

UTC = timezone.utc
NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def test_test_call_places_one_call_and_leaves_counters_alone() -> None:
    clock = VirtualClock(NOW)
    repo = InMemoryRepository()
    provider = FakeProvider("fake", clock=clock)
    service = CampaignService(repo, clock=clock, providers=provider)
    campaign = service.create(
        "w1",
        name="t",
        agent=AgentSettings(provider="fake", greeting_template="Hello {first_name}"),
        recipients=[{"phone_number": "+12125550101"}],
    )
    before = service.get("w1", campaign.id).campaign.counters
    attempt = service.test_call("w1", campaign.id, "+1 212 555 0199")
    assert attempt.test_call and attempt.external_call_id is not None
    assert provider.calls[-1].to == "+12125550199" and provider.calls[-1].test_call
    service.apply_event(provider.end_call(attempt.id, CallOutcome.ANSWERED))
    assert service.get("w1", campaign.id).campaign.counters == before


def test_async_dialer_long_running_mode_is_event_driven() -> None:
    async def scenario() -> None:
        repo = InMemoryRepository()
        fake = FakeProvider("fake")
        service = CampaignService(repo, providers=fake)
        campaign = service.create(
            "w1",
            name="live",
            agent=AgentSettings(provider="fake"),
            concurrency_limit=1,
            recipients=[{"phone_number": p} for p in sample_numbers(3, seed=4)],
        )
        dialer = AsyncDialer(repo, fake.as_async(), clock=SystemClock())
        async with dialer:
            service.start("w1", campaign.id)
            dialer.wake()
            for _ in range(3):
                for _ in range(500):
                    pending = fake.pending_calls()
                    if pending:
                        break
                    await asyncio.sleep(0.005)
                assert len(pending) == 1
                await dialer.submit(fake.end_call(pending[0].attempt_id, CallOutcome.ANSWERED))
            for _ in range(500):
                if service.get("w1", campaign.id).campaign.status is CampaignStatus.COMPLETED:
                    break
                await asyncio.sleep(0.005)
        assert service.get("w1", campaign.id).campaign.status is CampaignStatus.COMPLETED
        assert len(fake.calls) == 3

    asyncio.run(scenario())


def test_event_bus_streams_to_async_subscribers_per_campaign() -> None:
    async def scenario() -> list[object]:
        bus = EventBus()
        seen: list[object] = []

        async def consume() -> None:
            async for event in bus.subscribe(campaign_id="c1"):
                seen.append(event)
                if len(seen) == 2:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        bus.emit(CampaignStatusChanged("c2", "w", CampaignStatus.READY, CampaignStatus.ACTIVE, NOW))
        bus.emit(CampaignStatusChanged("c1", "w", CampaignStatus.READY, CampaignStatus.ACTIVE, NOW))
        from outdial.campaign import CampaignCounters

        bus.emit(ProgressUpdated("c1", "w", CampaignCounters(total=1), NOW))
        await asyncio.wait_for(task, 2)
        return seen

    seen = asyncio.run(scenario())
    assert [type(e).__name__ for e in seen] == ["CampaignStatusChanged", "ProgressUpdated"]


def test_event_bus_callbacks_and_unsubscribe() -> None:
    bus = EventBus()
    got: list[object] = []
    off = bus.on(got.append)
    event = CampaignStatusChanged("c", "w", CampaignStatus.READY, CampaignStatus.ACTIVE, NOW)
    bus.emit(event)
    off()
    bus.emit(event)
    assert got == [event] and list(bus.history) == [event, event]


def test_templates_find_and_fill_placeholders() -> None:
    assert placeholders("Hi {first_name}, {{literal}} {due_date}") == {"first_name", "due_date"}
    assert render("Hi {first_name}!", {"first_name": "Ada"}) == "Hi Ada!"
    assert render("Hi {missing}", {}) == "Hi "
    with pytest.raises(ConfigurationError, match=r"agent\.prompt_template"):
        placeholders("Hi {first_name", "agent.prompt_template")
    with pytest.raises(ConfigurationError):
        placeholders("{user.name}")


def test_campaigns_round_trip_through_json() -> None:
    from outdial import BusinessHours

    c = Campaign(
        id="c",
        workspace_id="w",
        created_at=NOW,
        name="x",
        business_hours=BusinessHours.weekly("Europe/Paris", {"mon-fri": [("10:00", "13:00")]}),
        retry_policy=RetryPolicy(max_attempts=4),
        prompt_variables={"brand": "Acme"},
        min_spacing=timedelta(seconds=5),
    )
    text = to_json(c)
    data = json.loads(text)
    assert data["status"] == "draft" and data["created_at"] == "2026-11-23T15:00:00Z"
    assert data["business_hours"]["schedule"]["monday"] == [{"start": "10:00", "end": "13:00"}]
    assert from_json(text, Campaign) == c


def test_events_unstructure_to_plain_json() -> None:
    event = CallEvent("vapi", CallStatus.ENDED, attempt_id="a", outcome=CallOutcome.BUSY)
    data = unstructure(event)
    assert data["status"] == "ended" and data["outcome"] == "busy"
    json.dumps(data)


def test_cli_without_arguments_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    from outdial.cli import main

    assert main([]) == 2
    assert main(["nope"]) == 2
    assert "usage" in capsys.readouterr().err


def test_cli_simulate(capsys: pytest.CaptureFixture[str]) -> None:
    from outdial.cli import main

    assert main(["simulate", "--recipients", "60", "--concurrency", "5"]) == 0
    assert "recipients 60" in capsys.readouterr().out


def test_cli_db_commands_on_sqlite_and_clear_errors(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    from outdial.cli import main

    url = f"sqlite:///{Path(str(tmp_path)) / 'x.sqlite'}"
    assert main(["db", "upgrade", url]) == 0
    assert "is at schema" in capsys.readouterr().out
    assert main(["db", "current", url]) == 0
    assert capsys.readouterr().out.strip() != "none"
    bad = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    assert main(["db", "upgrade", bad]) == 1
    err = capsys.readouterr().err
    assert "outdial db upgrade" in err and "Traceback" not in err

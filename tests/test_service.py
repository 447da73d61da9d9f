"""CampaignService: the seeds' routes as library calls."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from outdial import (
    AgentSettings,
    BusinessHours,
    CampaignService,
    CampaignStatus,
    CampaignValidationError,
    DuplicateRecipient,
    EventBus,
    InvalidPhoneNumber,
    InvalidTransition,
    NotFound,
    RecipientStatus,
    RowLimitExceeded,
)
from outdial.events import CampaignStatusChanged
from outdial.simulation import VirtualClock
from outdial.testing import InMemoryRepository

UTC = timezone.utc
START = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
AGENT = AgentSettings(
    provider="vapi", external_agent_id="asst_1", phone_number="+12125550100", phone_number_id="pn_1"
)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def service(clock: VirtualClock, bus: EventBus) -> CampaignService:
    return CampaignService(InMemoryRepository(), clock=clock, events=bus)


def ready_campaign(service: CampaignService, ws: str = "w1", **kw: Any) -> str:
    fields: dict[str, Any] = {"name": "Renewals", "agent": AGENT}
    fields.update(kw)
    campaign = service.create(
        ws,
        recipients=[{"phone_number": "+12125550101", "first_name": "Ada"}],
        **fields,
    )
    return campaign.id


def test_second_draft_within_30_seconds_is_the_same_draft(
    service: CampaignService, clock: VirtualClock
) -> None:
    first = service.create_draft("w1", created_by="u1")
    again = service.create_draft("w1", created_by="u1")
    assert again.reused and again.campaign.id == first.campaign.id
    clock.advance(timedelta(seconds=31))
    later = service.create_draft("w1", created_by="u1")
    assert not later.reused and later.campaign.id != first.campaign.id


def test_draft_saves_partial_data_at_any_step(service: CampaignService) -> None:
    draft = service.create_draft("w1").campaign
    service.save_draft("w1", draft.id, name="Step one")
    saved = service.save_draft(
        "w1", draft.id, recipients=[{"phone_number": "+12125550101", "company": "Acme"}]
    )
    assert saved.name == "Step one"
    assert saved.counters.total == 1


def test_finalize_reports_every_problem_at_once(service: CampaignService) -> None:
    draft = service.create_draft("w1").campaign
    service.save_draft(
        "w1",
        draft.id,
        name="",
        business_hours=BusinessHours(timezone="UTC", schedule={}),
        agent=AgentSettings(prompt_template="Hi {first_name}, about {policy_number}"),
    )
    with pytest.raises(CampaignValidationError) as info:
        service.finalize("w1", draft.id)
    fields = {p.field for p in info.value.problems}
    assert {
        "name",
        "agent.provider",
        "recipients",
        "business_hours",
        "agent.prompt_template",
    } <= fields
    assert any("policy_number" in p.message for p in info.value.problems)


def test_agent_without_external_id_or_number_is_refused(service: CampaignService) -> None:
    with pytest.raises(CampaignValidationError) as info:
        service.create(
            "w1",
            name="x",
            agent=AgentSettings(provider="inspra"),  # an app-defined provider: the seeds rule
            recipients=[{"phone_number": "+12125550101"}],
        )
    fields = {p.field for p in info.value.problems}
    assert fields == {"agent.external_agent_id", "agent.phone_number"}


def test_agent_is_checked_again_at_start(service: CampaignService) -> None:
    cid = ready_campaign(service)
    service.update("w1", cid, agent=AgentSettings(provider="vapi", external_agent_id="asst_1"))
    with pytest.raises(CampaignValidationError) as info:
        service.start("w1", cid)
    assert {p.field for p in info.value.problems} == {"agent.phone_number_id"}


def test_placeholders_filled_by_imported_columns_pass_finalize(service: CampaignService) -> None:
    draft = service.create_draft("w1").campaign
    service.save_draft(
        "w1",
        draft.id,
        name="Policy",
        agent=AgentSettings(
            provider="simulated", prompt_template="Hi {first_name}, policy {policy_number}"
        ),
        recipients=[{"phone_number": "+12125550101", "policy_number": "P-1"}],
    )
    assert service.finalize("w1", draft.id).status is CampaignStatus.READY


def test_lifecycle_start_pause_resume_terminate(service: CampaignService, bus: EventBus) -> None:
    cid = ready_campaign(service)
    assert service.start("w1", cid).status is CampaignStatus.ACTIVE
    assert service.pause("w1", cid).status is CampaignStatus.PAUSED
    assert service.resume("w1", cid).status is CampaignStatus.ACTIVE
    done = service.terminate("w1", cid)
    assert done.status is CampaignStatus.CANCELLED
    assert done.counters.skipped == 1 and done.counters.pending == 0
    changes = [e.new for e in bus.history if isinstance(e, CampaignStatusChanged)]
    assert changes == [
        CampaignStatus.ACTIVE,
        CampaignStatus.PAUSED,
        CampaignStatus.ACTIVE,
        CampaignStatus.CANCELLED,
    ]


def test_scheduled_campaign_starts_as_scheduled(service: CampaignService) -> None:
    cid = ready_campaign(
        service, schedule_type="scheduled", scheduled_start_at=START + timedelta(days=1)
    )
    assert service.start("w1", cid).status is CampaignStatus.SCHEDULED


def test_actions_not_allowed_name_the_state(service: CampaignService) -> None:
    cid = ready_campaign(service)
    with pytest.raises(InvalidTransition, match="cannot pause a campaign that is ready"):
        service.pause("w1", cid)


def test_update_only_drafts_and_ready(service: CampaignService) -> None:
    cid = ready_campaign(service)
    assert service.update("w1", cid, concurrency_limit=3).concurrency_limit == 3
    service.start("w1", cid)
    with pytest.raises(InvalidTransition):
        service.update("w1", cid, name="new")


def test_active_campaign_cannot_be_deleted(service: CampaignService) -> None:
    cid = ready_campaign(service)
    service.start("w1", cid)
    with pytest.raises(InvalidTransition):
        service.delete("w1", cid)
    service.terminate("w1", cid)
    service.delete("w1", cid)
    with pytest.raises(NotFound):
        service.get("w1", cid)
    assert service.list_campaigns("w1").total == 0


def test_another_workspace_sees_not_found(service: CampaignService) -> None:
    cid = ready_campaign(service, ws="w1")
    for call in (
        lambda: service.get("w2", cid),
        lambda: service.start("w2", cid),
        lambda: service.update("w2", cid, name="x"),
        lambda: service.list_recipients("w2", cid),
        lambda: service.add_recipient("w2", cid, "+12125550199"),
    ):
        with pytest.raises(NotFound):
            call()


def test_list_filters_searches_and_paginates(service: CampaignService) -> None:
    for name in ("Alpha renewals", "Beta", "Gamma renewals"):
        ready_campaign(service, name=name)
    page = service.list_campaigns("w1", search="renewal", page=1, page_size=1)
    assert page.total == 2 and len(page.items) == 1 and page.total_pages == 2
    assert service.list_campaigns("w1", status="ready").total == 3
    assert service.list_campaigns("w1", status="active").total == 0


def test_add_and_import_recipients_count_duplicates(service: CampaignService) -> None:
    cid = ready_campaign(service)
    with pytest.raises(DuplicateRecipient):
        service.add_recipient("w1", cid, "+1 (212) 555-0101")
    summary = service.import_recipients(
        "w1",
        cid,
        [
            {"phone_number": "+12125550102"},
            {"phone_number": "+1 212 555 0102"},
            {"phone_number": "+12125550101"},
            {"phone_number": "not a number"},
        ],
    )
    assert summary.imported == 1
    assert summary.duplicates == 2
    assert [p.field for p in summary.problems] == ["recipients[3].phone_number"]


def test_add_recipient_refuses_a_bad_number(service: CampaignService) -> None:
    cid = ready_campaign(service)
    with pytest.raises(InvalidPhoneNumber):
        service.add_recipient("w1", cid, "12")


def test_recipient_limit_refused_before_storing(service: CampaignService) -> None:
    cid = ready_campaign(service, max_recipients=2)
    with pytest.raises(RowLimitExceeded):
        service.import_recipients(
            "w1", cid, [{"phone_number": f"+1212555{n:04d}"} for n in range(200, 203)]
        )
    assert service.get("w1", cid).campaign.counters.total == 1


def test_csv_import_through_the_service(service: CampaignService) -> None:
    cid = ready_campaign(service)
    data = b"Phone Number,First Name,Plan\n+12125550150,Grace,gold\n+12125550151,Alan,silver\n"
    report = service.import_csv("w1", cid, io.BytesIO(data))
    assert report.imported == 2
    page = service.list_recipients("w1", cid, search="grace")
    assert [r.variables["plan"] for r in page.items] == ["gold"]
    assert "plan" in service.get("w1", cid).campaign.csv_column_headers


def test_csv_over_the_limit_stores_nothing(service: CampaignService) -> None:
    cid = ready_campaign(service, max_recipients=2)
    data = b"phone\n+12125550150\n+12125550151\n"
    with pytest.raises(RowLimitExceeded):
        service.import_csv("w1", cid, io.BytesIO(data))
    assert service.get("w1", cid).campaign.counters.total == 1


def test_list_recipients_filters_by_status(service: CampaignService) -> None:
    cid = ready_campaign(service)
    service.start("w1", cid)
    service.terminate("w1", cid)
    assert service.list_recipients("w1", cid, status=RecipientStatus.SKIPPED).total == 1
    assert service.list_recipients("w1", cid, status="pending").total == 0


def test_stats_of_a_fresh_campaign(service: CampaignService) -> None:
    stats = service.stats("w1", ready_campaign(service))
    assert stats.total == 1 and stats.pending == 1 and stats.answer_rate is None
    assert stats.estimated_completion_at is None
    assert stats.to_dict()["progress"] == 0.0


def test_unknown_fields_are_refused(service: CampaignService) -> None:
    cid = ready_campaign(service)
    with pytest.raises(ValueError, match="cannot be set"):
        service.update("w1", cid, status="active")


def test_rule_set_needing_holidays_is_refused_without_the_extra(
    service: CampaignService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "holidays" else real(name, *a)
    )
    with pytest.raises(CampaignValidationError) as info:
        ready_campaign(service, rule_set="us")
    assert any("outdial[holidays]" in p.message for p in info.value.problems)


def test_create_with_a_bad_recipient_row_stores_nothing(service: CampaignService) -> None:
    with pytest.raises(CampaignValidationError) as info:
        service.create(
            "w1",
            name="x",
            agent=AGENT,
            recipients=[{"phone_number": "+12125550101"}, {"phone_number": "12"}],
        )
    assert [p.field for p in info.value.problems] == ["recipients[1].phone_number"]
    assert service.list_campaigns("w1").total == 0


def test_save_draft_with_a_bad_row_keeps_the_draft_as_it_was(service: CampaignService) -> None:
    draft = service.create_draft("w1").campaign
    with pytest.raises(CampaignValidationError):
        service.save_draft("w1", draft.id, name="New", recipients=[{"phone_number": "bad"}])
    again = service.get("w1", draft.id).campaign
    assert again.name == draft.name and again.counters.total == 0

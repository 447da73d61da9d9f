"""The sans-IO engine, tested as a function: facts in, decisions out."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest

from outdial import engine as engine_module
from outdial._time import local_midnight
from outdial.calendar import BusinessHours
from outdial.campaign import (
    AgentSettings,
    Campaign,
    CampaignAction,
    CampaignCounters,
    CampaignStatus,
)
from outdial.engine import CampaignSnapshot, Effect, Engine, EngineConfig, Snapshot
from outdial.errors import (
    ConfigurationError,
    InvalidTransition,
    NaiveDatetimeError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, CallStatus, DialStats, InFlightCounts, PlacedCall
from outdial.recipient import (
    RECIPIENT_TRANSITIONS,
    Attempt,
    AttemptStatus,
    Recipient,
    RecipientStatus,
)
from outdial.retry import Final, Fixed, RandomSource, RetryAt, RetryPolicy

UTC = timezone.utc
# Monday 2026-11-23 15:00 UTC = 10:00 in New York
NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)


def campaign(**kw: object) -> Campaign:
    defaults: dict[str, object] = {
        "id": "c1",
        "workspace_id": "w1",
        "created_at": NOW - timedelta(days=1),
        "name": "Renewals",
        "status": CampaignStatus.ACTIVE,
        "agent": AgentSettings(provider="fake"),
        "concurrency_limit": 5,
        "counters": CampaignCounters(total=100, pending=100),
    }
    defaults.update(kw)
    return Campaign(**defaults)  # type: ignore[arg-type]


def recipient(n: int, **kw: object) -> Recipient:
    defaults: dict[str, object] = {
        "id": f"r{n}",
        "campaign_id": "c1",
        "workspace_id": "w1",
        "phone": f"+1212555{n:04d}",
        "created_at": NOW - timedelta(hours=1),
        "seq": n,
        "time_zones": ("America/New_York",),
    }
    defaults.update(kw)
    return Recipient(**defaults)  # type: ignore[arg-type]


def shot(c: Campaign, candidates: list[Recipient], **kw: object) -> CampaignSnapshot:
    return CampaignSnapshot(campaign=c, candidates=tuple(candidates), **kw)  # type: ignore[arg-type]


def test_dials_up_to_the_concurrency_limit_in_the_given_order() -> None:
    engine = Engine()
    rs = [recipient(i) for i in range(10)]
    plan = engine.plan(NOW, Snapshot((shot(campaign(), rs),)))
    assert [d.recipient.id for d in plan.dials] == ["r0", "r1", "r2", "r3", "r4"]
    assert all(d.attempt_number == 1 for d in plan.dials)


def test_in_flight_calls_use_up_the_campaign_limit() -> None:
    engine = Engine()
    rs = [recipient(i) for i in range(10)]
    flight = InFlightCounts({"c1": 4}, {"w1": 4}, 4)
    plan = engine.plan(NOW, Snapshot((shot(campaign(), rs),), flight))
    assert len(plan.dials) == 1


def test_suppressed_numbers_are_skipped_never_dialled() -> None:
    engine = Engine()
    rs = [recipient(i) for i in range(3)]
    plan = engine.plan(NOW, Snapshot((shot(campaign(), rs, suppressed=frozenset({rs[1].phone})),)))
    assert [d.recipient.id for d in plan.dials] == ["r0", "r2"]
    assert [s.recipient.id for s in plan.skips] == ["r1"]
    assert "suppressed" in plan.skips[0].reason


def test_outside_business_hours_recipients_are_deferred_to_the_next_opening() -> None:
    hours = BusinessHours.weekly("America/New_York", {"mon-fri": [("09:00", "17:00")]})
    engine = Engine()
    night = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # Monday 22:00 New York
    plan = engine.plan(night, Snapshot((shot(campaign(business_hours=hours), [recipient(1)]),)))
    assert plan.dials == ()
    assert plan.defers[0].until == datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # Tue 09:00
    assert plan.wake_at == plan.defers[0].until


def test_recipient_local_hours_apply_under_a_rule_set() -> None:
    engine = Engine()
    # 13:30 UTC = 08:30 New York but 05:30 Los Angeles: only New York may be called.
    at = datetime(2026, 11, 23, 13, 30, tzinfo=UTC)
    ny = recipient(1)
    la = recipient(2, phone="+13105550002", time_zones=("America/Los_Angeles",))
    plan = engine.plan(at, Snapshot((shot(campaign(rule_set="us"), [ny, la]),)))
    assert [d.recipient.id for d in plan.dials] == ["r1"]
    assert plan.defers[0].recipient.id == "r2"
    assert plan.defers[0].until == datetime(2026, 11, 23, 16, 0, tzinfo=UTC)  # 08:00 LA


def test_number_whose_zones_share_no_window_is_skipped() -> None:
    from outdial.calendar import TimeSlot, Weekday
    from outdial.compliance import CallingRule, RuleSet, register_rule_set

    office = {d: (TimeSlot.parse("09:00", "17:00"),) for d in list(Weekday)[:5]}
    register_rule_set(RuleSet("us-office-hours", (CallingRule("office", "US", office),)))
    engine = Engine()
    toll_free = recipient(1, phone="+18005550100", time_zones=())
    plan = engine.plan(NOW, Snapshot((shot(campaign(rule_set="us-office-hours"), [toll_free]),)))
    assert plan.dials == ()
    assert "no permitted window" in plan.skips[0].reason


def test_scheduled_campaign_activates_at_its_start_and_not_before() -> None:
    engine = Engine()
    start = NOW + timedelta(hours=2)
    c = campaign(status=CampaignStatus.SCHEDULED, scheduled_start_at=start)
    plan = engine.plan(NOW, Snapshot((shot(c, []),)))
    assert plan.transitions == ()
    assert plan.wake_at == start
    plan = engine.plan(start, Snapshot((shot(c, []),)))
    assert [t.action for t in plan.transitions] == [CampaignAction.ACTIVATE]


def test_expired_campaign_is_expired_instead_of_dialled() -> None:
    engine = Engine()
    c = campaign(expires_at=NOW - timedelta(seconds=1))
    plan = engine.plan(NOW, Snapshot((shot(c, [recipient(1)]),)))
    assert [t.action for t in plan.transitions] == [CampaignAction.EXPIRE]
    assert plan.dials == ()


@pytest.mark.parametrize("status", [CampaignStatus.PAUSED, CampaignStatus.READY])
def test_paused_or_not_started_campaigns_place_no_calls(status: CampaignStatus) -> None:
    plan = Engine().plan(NOW, Snapshot((shot(campaign(status=status), [recipient(1)]),)))
    assert plan.dials == ()


def test_campaign_completes_when_nothing_is_left() -> None:
    c = campaign(counters=CampaignCounters(total=3, completed=2, failed=1))
    plan = Engine().plan(NOW, Snapshot((shot(c, []),)))
    assert [t.action for t in plan.transitions] == [CampaignAction.COMPLETE]


def test_the_snapshots_counters_decide_over_the_campaigns_older_ones() -> None:
    # a repository may hand the counters apart from the campaign (dispatchable_campaigns)
    done = CampaignCounters(total=3, completed=2, failed=1)
    pending = CampaignCounters(total=3, completed=2, pending=1)
    older_pending = attrs.evolve(shot(campaign(counters=pending), []), counters=done)
    plan = Engine().plan(NOW, Snapshot((older_pending,)))
    assert [t.action for t in plan.transitions] == [CampaignAction.COMPLETE]
    older_done = attrs.evolve(shot(campaign(counters=done), [recipient(1)]), counters=pending)
    plan = Engine().plan(NOW, Snapshot((older_done,)))
    assert plan.transitions == () and len(plan.dials) == 1


def test_plan_uses_the_capacity_the_snapshot_was_loaded_with() -> None:
    # the loader sized the candidates with campaign_capacity at the same instant: plan
    # takes that result as it is rather than computing it a second time
    engine = Engine()
    rs = [recipient(i) for i in range(4)]
    later = NOW + timedelta(seconds=40)
    plan = engine.plan(NOW, Snapshot((shot(campaign(), rs, capacity=(2, later)),)))
    assert [d.recipient.id for d in plan.dials] == ["r0", "r1"]
    assert plan.wake_at == later
    plan = engine.plan(NOW, Snapshot((shot(campaign(), rs, capacity=(0, None)),)))
    assert plan.dials == () and plan.wake_at is None


def test_plan_computes_the_capacity_when_the_snapshot_has_none() -> None:
    engine = Engine()
    c = campaign(concurrency_limit=3)
    rs = [recipient(i) for i in range(5)]
    in_flight = InFlightCounts({"c1": 1}, {"w1": 1}, 1)
    computed = engine.campaign_capacity(c, 1, DialStats(), NOW)
    assert computed == (2, None)
    without = engine.plan(NOW, Snapshot((shot(c, rs),), in_flight))
    given = engine.plan(NOW, Snapshot((shot(c, rs, capacity=computed),), in_flight))
    assert [d.recipient.id for d in without.dials] == ["r0", "r1"]
    assert without == given


def test_workspace_limit_is_shared_round_robin_between_campaigns() -> None:
    engine = Engine(EngineConfig(default_workspace_limit=4))
    a = campaign(id="a", concurrency_limit=10)
    b = campaign(id="b", concurrency_limit=10)
    ra = [recipient(i, id=f"a{i}", campaign_id="a") for i in range(10)]
    rb = [recipient(i, id=f"b{i}", campaign_id="b") for i in range(10)]
    plan = engine.plan(NOW, Snapshot((shot(a, ra), shot(b, rb))))
    assert sorted(d.campaign_id for d in plan.dials) == ["a", "a", "b", "b"]


def test_a_round_claims_at_most_max_dials_per_round_and_asks_to_look_again_at_once() -> None:
    engine = Engine(EngineConfig(max_dials_per_round=3))
    c = campaign(concurrency_limit=10)
    assert engine.candidates_wanted(c, 10) == 6  # the round's share plus slack, not 10 + 8
    rs = [recipient(i) for i in range(10)]
    plan = engine.plan(NOW, Snapshot((shot(c, rs),)))
    assert [d.recipient.id for d in plan.dials] == ["r0", "r1", "r2"]
    assert plan.wake_at == NOW  # more free slots: the runner dispatches again now
    uncapped = Engine().plan(NOW, Snapshot((shot(c, rs),)))
    assert len(uncapped.dials) == 10


def test_the_round_cap_is_shared_by_campaigns_and_bounded_by_the_global_limit() -> None:
    a = campaign(id="a", concurrency_limit=10)
    b = campaign(id="b", concurrency_limit=10)
    ra = [recipient(i, id=f"a{i}", campaign_id="a") for i in range(10)]
    rb = [recipient(i, id=f"b{i}", campaign_id="b") for i in range(10)]
    capped = Engine(EngineConfig(max_dials_per_round=4)).plan(
        NOW, Snapshot((shot(a, ra), shot(b, rb)))
    )
    assert sorted(d.campaign_id for d in capped.dials) == ["a", "a", "b", "b"]
    tighter = Engine(EngineConfig(max_dials_per_round=4, global_limit=2)).plan(
        NOW, Snapshot((shot(a, ra), shot(b, rb)))
    )
    assert len(tighter.dials) == 2


def test_a_round_below_its_cap_keeps_its_usual_wake() -> None:
    engine = Engine(EngineConfig(max_dials_per_round=5))
    c = campaign(concurrency_limit=10)
    plan = engine.plan(NOW, Snapshot((shot(c, [recipient(0), recipient(1)]),)))
    assert len(plan.dials) == 2
    assert plan.wake_at is None  # nothing else is due: only a call ending wakes it


@pytest.mark.parametrize("cap", [0, -1])
def test_max_dials_per_round_below_one_is_refused(cap: int) -> None:
    with pytest.raises(ConfigurationError) as info:
        EngineConfig(max_dials_per_round=cap)
    assert info.value.field == "max_dials_per_round"


def test_global_limit_is_shared_fairly_between_workspaces() -> None:
    engine = Engine(EngineConfig(global_limit=3))
    shots = []
    for ws in ("w1", "w2", "w3"):
        c = campaign(id=f"c-{ws}", workspace_id=ws, concurrency_limit=10)
        rs = [recipient(i, id=f"{ws}-{i}", campaign_id=c.id, workspace_id=ws) for i in range(5)]
        shots.append(shot(c, rs))
    plan = engine.plan(NOW, Snapshot(tuple(shots)))
    assert sorted(d.recipient.workspace_id for d in plan.dials) == ["w1", "w2", "w3"]


def test_least_recently_served_campaign_goes_first_when_capacity_is_scarce() -> None:
    engine = Engine(EngineConfig(global_limit=1))
    a = campaign(id="a")
    b = campaign(id="b")
    ra = [recipient(1, id="a1", campaign_id="a")]
    rb = [recipient(2, id="b1", campaign_id="b")]
    served = DialStats(last_start_at=NOW - timedelta(seconds=5))
    older = DialStats(last_start_at=NOW - timedelta(seconds=50))
    plan = engine.plan(
        NOW, Snapshot((shot(a, ra, dial_stats=served), shot(b, rb, dial_stats=older)))
    )
    assert [d.campaign_id for d in plan.dials] == ["b"]


def test_calls_per_minute_pacing_limits_starts_in_a_rolling_minute() -> None:
    engine = Engine()
    c = campaign(concurrency_limit=50, calls_per_minute=3)
    starts = (NOW - timedelta(seconds=50), NOW - timedelta(seconds=10))
    stats = DialStats(starts_since_minute=starts, last_start_at=starts[-1])
    plan = engine.plan(
        NOW, Snapshot((shot(c, [recipient(i) for i in range(5)], dial_stats=stats),))
    )
    assert len(plan.dials) == 1
    full = DialStats(starts_since_minute=(*starts, NOW), last_start_at=NOW)
    plan = engine.plan(NOW, Snapshot((shot(c, [recipient(9)], dial_stats=full),)))
    assert plan.dials == ()
    assert plan.wake_at == starts[0] + timedelta(seconds=60)


def test_minimum_spacing_between_call_starts() -> None:
    engine = Engine()
    c = campaign(concurrency_limit=50, min_spacing=timedelta(seconds=10))
    stats = DialStats(last_start_at=NOW - timedelta(seconds=4))
    plan = engine.plan(NOW, Snapshot((shot(c, [recipient(1), recipient(2)], dial_stats=stats),)))
    assert plan.dials == ()
    assert plan.wake_at == NOW + timedelta(seconds=6)
    stats = DialStats(last_start_at=NOW - timedelta(seconds=10))
    plan = engine.plan(NOW, Snapshot((shot(c, [recipient(1), recipient(2)], dial_stats=stats),)))
    assert len(plan.dials) == 1


def test_daily_cap_stops_dialling_until_the_next_local_day() -> None:
    engine = Engine()
    c = campaign(daily_cap=10, timezone="America/New_York")
    stats = DialStats(starts_today=10)
    plan = engine.plan(NOW, Snapshot((shot(c, [recipient(1)], dial_stats=stats),)))
    assert plan.dials == ()
    assert plan.wake_at == datetime(2026, 11, 24, 5, 0, tzinfo=UTC)  # midnight New York


def _local_day_start(zone_name: str, now: datetime, days: int = 0) -> datetime:
    """The start of ``now``'s local day (plus ``days``) in ``zone_name``, worked out anew."""
    zone = ZoneInfo(zone_name)
    return local_midnight(now.astimezone(zone).date() + timedelta(days=days), zone)


@pytest.mark.parametrize(
    ("zone", "start", "hours"),
    [
        ("America/New_York", datetime(2026, 3, 7, 12, 0, tzinfo=UTC), 60),  # DST begins
        ("America/New_York", datetime(2026, 10, 31, 12, 0, tzinfo=UTC), 60),  # DST ends
        ("America/Santiago", datetime(2026, 9, 4, 12, 0, tzinfo=UTC), 60),  # no midnight
        # 2007-11-04: clocks went back from 00:01 to 23:01, so for an hour after the
        # 4th began it was the 3rd again (a memo by interval of instants would be wrong)
        ("America/Goose_Bay", datetime(2007, 11, 2, 12, 0, tzinfo=UTC), 72),
        ("Asia/Kolkata", datetime(2026, 11, 22, 12, 0, tzinfo=UTC), 60),
    ],
)
def test_local_day_starts_are_those_of_each_instants_own_local_day(
    zone: str, start: datetime, hours: int
) -> None:
    c = campaign(timezone=zone)
    instants = [start + timedelta(minutes=7 * i) for i in range(hours * 60 // 7)]
    # forwards, then backwards and shuffled: what was worked out before never leaks
    for now in [*instants, *reversed(instants), *random.Random(5).sample(instants, 200)]:
        assert Engine.day_start(c, now) == _local_day_start(zone, now)
        assert Engine.next_day_start(c, now) == _local_day_start(zone, now, days=1)


def test_the_local_day_start_goes_back_a_day_where_the_clocks_did() -> None:
    c = campaign(timezone="America/Goose_Bay")
    midnight = datetime(2007, 11, 4, 3, 0, tzinfo=UTC)  # 00:00 on the 4th, daylight time
    assert Engine.day_start(c, midnight + timedelta(seconds=30)) == midnight
    again_the_3rd = midnight + timedelta(minutes=30)  # 23:29 standard time on the 3rd
    assert Engine.day_start(c, again_the_3rd) == datetime(2007, 11, 3, 3, 0, tzinfo=UTC)
    assert Engine.next_day_start(c, again_the_3rd) == midnight


def test_remembered_local_day_starts_are_bounded_and_keyed_by_zone_and_day() -> None:
    new_york, kolkata = campaign(timezone="America/New_York"), campaign(timezone="Asia/Kolkata")
    assert Engine.day_start(new_york, NOW) != Engine.day_start(kolkata, NOW)
    for day in range(1500):  # more days than the table keeps: it starts again when full
        now = NOW + timedelta(days=day)
        assert Engine.day_start(new_york, now) == _local_day_start("America/New_York", now)
        assert len(engine_module._MIDNIGHTS) <= 1024


def test_rolling_cap_of_a_rule_set_defers_a_fourth_call_in_florida() -> None:
    engine = Engine()
    fl = recipient(1, phone="+13055550101", attempts=3)
    starts = [NOW - timedelta(hours=h) for h in (20, 10, 2)]
    c = campaign(rule_set="us", retry_policy=RetryPolicy(max_attempts=10))
    plan = engine.plan(NOW, Snapshot((shot(c, [fl], attempt_starts={"r1": starts}),)))
    assert plan.dials == ()
    assert plan.defers[0].until >= starts[0] + timedelta(hours=24)


# -- results -------------------------------------------------------------------------------


def attempt(**kw: object) -> Attempt:
    defaults: dict[str, object] = {
        "id": "a1",
        "campaign_id": "c1",
        "recipient_id": "r1",
        "workspace_id": "w1",
        "number": 1,
        "phone": "+12125550001",
        "created_at": NOW,
        "status": AttemptStatus.PLACED,
        "external_call_id": "CA1",
        "provider": "fake",
    }
    defaults.update(kw)
    return Attempt(**defaults)  # type: ignore[arg-type]


def ended(outcome: CallOutcome, **kw: Any) -> CallEvent:
    return CallEvent(
        provider="fake", status=CallStatus.ENDED, attempt_id="a1", outcome=outcome, **kw
    )


CALLING = recipient(1, status=RecipientStatus.CALLING, attempts=1)


def test_answered_call_completes_the_recipient() -> None:
    d = Engine().on_event(
        NOW, campaign(), attempt(), CALLING, ended(CallOutcome.ANSWERED, duration_seconds=42), []
    )
    assert d.effect is Effect.APPLIED
    assert d.recipient is not None and d.recipient.status is RecipientStatus.COMPLETED
    assert d.attempt is not None and d.attempt.status is AttemptStatus.ENDED
    assert d.recipient.duration_seconds == 42


def test_no_answer_schedules_a_retry_inside_the_next_window() -> None:
    hours = BusinessHours.weekly("America/New_York", {"mon-fri": [("09:00", "17:00")]})
    c = campaign(business_hours=hours, retry_policy=RetryPolicy(backoff=Fixed(timedelta(hours=2))))
    late = datetime(2026, 11, 23, 21, 30, tzinfo=UTC)  # 16:30 New York
    d = Engine().on_event(
        late, c, attempt(created_at=late), CALLING, ended(CallOutcome.NO_ANSWER), []
    )
    assert d.recipient is not None and d.recipient.status is RecipientStatus.PENDING
    assert d.retry_at == datetime(2026, 11, 24, 14, 0, tzinfo=UTC)  # Tue 09:00, not 18:30


def test_duplicate_final_event_is_ignored() -> None:
    done = attempt(status=AttemptStatus.ENDED, outcome=CallOutcome.ANSWERED)
    d = Engine().on_event(NOW, campaign(), done, CALLING, ended(CallOutcome.NO_ANSWER), [])
    assert d.effect is Effect.DUPLICATE and d.recipient is None and d.attempt is None


def test_out_of_order_progress_event_is_stale() -> None:
    a = attempt(last_sequence=3)
    ev = CallEvent(provider="fake", status=CallStatus.RINGING, attempt_id="a1", sequence=1)
    assert Engine().on_event(NOW, campaign(), a, CALLING, ev, []).effect is Effect.STALE


def test_late_event_for_an_old_attempt_never_moves_the_recipient() -> None:
    moved_on = recipient(1, status=RecipientStatus.CALLING, attempts=2)
    d = Engine().on_event(NOW, campaign(), attempt(number=1), moved_on, ended(CallOutcome.BUSY), [])
    assert d.effect is Effect.LATE and d.recipient is None
    assert d.attempt is not None and d.attempt.status is AttemptStatus.ENDED


def test_opt_out_suppresses_the_number_and_is_final() -> None:
    d = Engine().on_event(NOW, campaign(), attempt(), CALLING, ended(CallOutcome.OPTED_OUT), [])
    assert d.suppress_phone == CALLING.phone
    assert d.recipient is not None and d.recipient.status is RecipientStatus.COMPLETED


def test_result_in_a_cancelled_campaign_is_recorded_without_retry() -> None:
    c = campaign(status=CampaignStatus.CANCELLED)
    d = Engine().on_event(NOW, c, attempt(), CALLING, ended(CallOutcome.NO_ANSWER), [])
    assert d.recipient is not None and d.recipient.status is RecipientStatus.SKIPPED


def test_max_attempts_ends_in_failed() -> None:
    third = recipient(1, status=RecipientStatus.CALLING, attempts=3)
    history = [
        attempt(id=f"a{i}", number=i, status=AttemptStatus.ENDED, outcome=CallOutcome.BUSY)
        for i in (1, 2)
    ]
    d = Engine().on_event(
        NOW, campaign(), attempt(id="a3", number=3), third, ended(CallOutcome.BUSY), history
    )
    assert d.recipient is not None and d.recipient.status is RecipientStatus.FAILED


def test_placed_call_moves_queued_to_calling() -> None:
    queued = recipient(1, status=RecipientStatus.QUEUED, attempts=1)
    dialing = attempt(status=AttemptStatus.DIALING, external_call_id=None)
    d = Engine().on_placed(NOW, dialing, queued, PlacedCall("fake", "CA9"))
    assert d.attempt is not None and d.attempt.external_call_id == "CA9"
    assert d.recipient is not None and d.recipient.status is RecipientStatus.CALLING


def test_unknown_fate_dial_error_waits_for_reconciliation() -> None:
    queued = recipient(1, status=RecipientStatus.QUEUED, attempts=1)
    dialing = attempt(status=AttemptStatus.DIALING)
    d = Engine().on_dial_error(
        NOW, campaign(), dialing, queued, ProviderUnavailable("timeout", placed=None), []
    )
    assert d.effect is Effect.WAITING and d.recipient is None
    assert d.recheck_at is not None and d.recheck_at > NOW


def test_refused_retryable_dial_gives_the_attempt_back() -> None:
    queued = recipient(1, status=RecipientStatus.QUEUED, attempts=1)
    dialing = attempt(status=AttemptStatus.DIALING)
    err = ProviderRateLimited("slow down", retry_after=timedelta(seconds=20))
    d = Engine().on_dial_error(NOW, campaign(), dialing, queued, err, [])
    assert d.recipient is not None and d.recipient.status is RecipientStatus.PENDING
    assert d.recipient.attempts == 0
    assert d.retry_at == NOW + timedelta(seconds=20)


def test_rejected_invalid_number_fails_for_good() -> None:
    queued = recipient(1, status=RecipientStatus.QUEUED, attempts=1)
    err = ProviderRejected("bad To", code=21211, outcome=CallOutcome.INVALID_NUMBER)
    d = Engine().on_dial_error(
        NOW, campaign(), attempt(status=AttemptStatus.DIALING), queued, err, []
    )
    assert d.recipient is not None and d.recipient.status is RecipientStatus.FAILED
    assert d.recipient.outcome is CallOutcome.INVALID_NUMBER


def test_reconcile_never_placed_returns_the_recipient_to_pending_at_once() -> None:
    queued = recipient(1, status=RecipientStatus.QUEUED, attempts=1)
    dialing = attempt(status=AttemptStatus.DIALING, created_at=NOW - timedelta(minutes=5))
    d = Engine().on_reconcile(NOW, campaign(), dialing, queued, None, [])
    assert d.recipient is not None and d.recipient.status is RecipientStatus.PENDING
    assert d.recipient.attempts == 0 and d.retry_at == NOW


def test_reconcile_unknown_fate_retries_only_after_a_safe_delay() -> None:
    engine = Engine()
    queued = recipient(1, status=RecipientStatus.QUEUED, attempts=1)
    young = attempt(status=AttemptStatus.DIALING, created_at=NOW - timedelta(minutes=5))
    err = ProviderUnavailable("cannot tell", placed=None)
    assert engine.on_reconcile(NOW, campaign(), young, queued, err, []).effect is Effect.WAITING
    old = attempt(status=AttemptStatus.DIALING, created_at=NOW - timedelta(hours=7))
    c = campaign(retry_policy=RetryPolicy(backoff=Fixed(timedelta(seconds=1))))
    d = engine.on_reconcile(NOW, c, old, queued, err, [])
    assert d.recipient is not None and d.recipient.status is RecipientStatus.PENDING
    assert d.retry_at is not None
    assert d.retry_at >= NOW + engine.config.unknown_fate_delay


def test_reconcile_with_a_final_view_applies_it() -> None:
    queued = recipient(1, status=RecipientStatus.QUEUED, attempts=1)
    dialing = attempt(status=AttemptStatus.DIALING, created_at=NOW - timedelta(minutes=5))
    d = Engine().on_reconcile(NOW, campaign(), dialing, queued, ended(CallOutcome.ANSWERED), [])
    assert d.recipient is not None and d.recipient.status is RecipientStatus.COMPLETED


def test_jitter_uses_only_the_random_source_it_is_handed() -> None:
    from outdial.retry import Exponential, Jitter

    c = campaign(
        retry_policy=RetryPolicy(
            backoff=Exponential(timedelta(minutes=1), timedelta(hours=1), jitter=Jitter.FULL)
        )
    )
    a = Engine().on_event(NOW, c, attempt(), CALLING, ended(CallOutcome.BUSY), [], random.Random(7))
    b = Engine().on_event(NOW, c, attempt(), CALLING, ended(CallOutcome.BUSY), [], random.Random(7))
    assert a.retry_at == b.retry_at


def test_engine_is_a_pure_function_of_its_inputs() -> None:
    snap = Snapshot((shot(campaign(), [recipient(i) for i in range(8)]),))
    assert Engine().plan(NOW, snap) == Engine().plan(NOW, snap)
    assert attrs.has(type(Engine().plan(NOW, snap)))


def test_dial_error_after_a_faster_webhook_changes_nothing() -> None:
    done = attempt(status=AttemptStatus.ENDED, outcome=CallOutcome.ANSWERED)
    completed = recipient(1, status=RecipientStatus.COMPLETED, attempts=1)
    err = ProviderUnavailable("late 503", placed=False)
    d = Engine().on_dial_error(NOW, campaign(), done, completed, err, [])
    assert d.effect is Effect.DUPLICATE and d.recipient is None and d.attempt is None


def test_next_due_time_is_only_loaded_when_a_free_slot_could_stay_free() -> None:
    engine = Engine()
    c = campaign()
    assert not engine.needs_next_due(c, 0, 0, 0)  # no free slot: the next call ending wakes us
    assert engine.needs_next_due(c, 3, 2, 6)  # fewer due than wanted: wake at the next due
    # more due than it can dial and nothing shared to stop it: it dials them or looks again
    assert not engine.needs_next_due(c, 3, 6, 6)
    limited = Engine(EngineConfig(workspace_limits={"w1": 2}))
    assert limited.needs_next_due(c, 3, 6, 6)  # the workspace limit may leave slots free
    assert Engine(EngineConfig(global_limit=4)).needs_next_due(c, 3, 6, 6)
    assert Engine(EngineConfig(default_workspace_limit=9)).needs_next_due(c, 3, 6, 6)
    # a limit for another workspace only: nothing shared stops this campaign short
    assert not Engine(EngineConfig(workspace_limits={"w2": 2})).needs_next_due(c, 3, 6, 6)


def test_a_plan_without_the_next_due_time_wakes_as_one_with_it() -> None:
    # what needs_next_due promises: when it says no, next_due_at cannot change the plan
    engine = Engine()
    c = campaign(concurrency_limit=2)
    due = [recipient(n) for n in range(1, 5)]
    later = NOW + timedelta(minutes=7)
    compared = 0
    for capacity_left in (0, 1, 2):
        in_flight = InFlightCounts({"c1": 2 - capacity_left}, {"w1": 2 - capacity_left}, 2)
        wanted = engine.candidates_wanted(c, capacity_left)
        loaded = due[:wanted]
        if engine.needs_next_due(c, capacity_left, len(loaded), wanted):
            continue
        plans = [
            engine.plan(
                NOW,
                Snapshot(
                    (
                        shot(
                            c,
                            loaded,
                            candidates_truncated=bool(wanted),
                            next_due_at=next_due,
                        ),
                    ),
                    in_flight,
                ),
            )
            for next_due in (None, later)
        ]
        assert plans[0] == plans[1]
        compared += bool(plans[0].dials)
    assert compared == 2


class _RecordingBackoff:
    """A backoff that remembers the previous delays it is given."""

    def __init__(self) -> None:
        self.seen: list[timedelta | None] = []

    def delay(
        self, retry_number: int, previous: timedelta | None, rng: RandomSource | None
    ) -> timedelta:
        self.seen.append(previous)
        return timedelta(minutes=5)


@pytest.mark.parametrize("seconds", [600.0, 90.5, 0.000001, 3 * 86400 + 0.25])
def test_a_retry_is_given_the_recipients_previous_delay(seconds: float) -> None:
    backoff = _RecordingBackoff()
    c = campaign(retry_policy=RetryPolicy(max_attempts=5, backoff=backoff))
    r = recipient(1, status=RecipientStatus.CALLING, attempts=1, last_retry_delay_seconds=seconds)
    for _ in range(2):  # the second time through the engine's table of delays
        d = Engine().on_event(NOW, c, attempt(), r, ended(CallOutcome.NO_ANSWER), [])
        assert d.retry_at == NOW + timedelta(minutes=5)
    assert backoff.seen == [timedelta(seconds=seconds)] * 2


def test_the_table_of_previous_delays_stays_small_and_exact() -> None:
    for i in range(3000):
        assert engine_module._DELAYS[i / 7] == timedelta(seconds=i / 7)
    assert len(engine_module._DELAYS) <= 1024


def test_the_table_of_retry_delay_seconds_stays_small_and_exact() -> None:
    for i in range(3000):
        delay = timedelta(microseconds=i * 997)
        assert engine_module._SECONDS[delay] == delay.total_seconds()
    assert len(engine_module._SECONDS) <= 1024


def test_recipients_retried_after_the_same_delay_store_the_same_seconds() -> None:
    c = campaign(retry_policy=RetryPolicy(max_attempts=3, backoff=Fixed(timedelta(minutes=7))))
    stored = []
    for n in range(2):
        r = recipient(n, status=RecipientStatus.CALLING, attempts=1)
        a = attempt(id=f"a{n}", recipient_id=r.id)
        d = Engine().on_event(NOW, c, a, r, ended(CallOutcome.NO_ANSWER), [a])
        assert d.recipient is not None
        stored.append(d.recipient.last_retry_delay_seconds)
    assert stored == [420.0, 420.0]
    assert stored[0] is stored[1]  # one float for every recipient retried after 7 minutes


def test_a_naive_now_is_refused_when_a_call_would_be_placed_at_any_hour() -> None:
    rs = [recipient(i) for i in range(2)]
    naive = NOW.replace(tzinfo=None)
    with pytest.raises(NaiveDatetimeError):
        Engine().plan(naive, Snapshot((shot(campaign(), rs),)))
    # also after a skipped candidate: the check is made for the first candidate dialled
    skipped_first = shot(campaign(), rs, suppressed=frozenset({rs[0].phone}))
    with pytest.raises(NaiveDatetimeError):
        Engine().plan(naive, Snapshot((skipped_first,)))


def test_skips_and_defers_of_several_campaigns_come_campaign_by_campaign() -> None:
    hours = BusinessHours.weekly("America/New_York", {"mon-fri": [("09:00", "17:00")]})
    night = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # Monday 22:00 New York
    shots = []
    for cid in ("c1", "c2"):
        rs = [recipient(i, id=f"{cid}-r{i}", campaign_id=cid) for i in range(3)]
        c = campaign(id=cid, business_hours=hours)
        shots.append(shot(c, rs, suppressed=frozenset({rs[0].phone, rs[2].phone})))
    plan = Engine().plan(night, Snapshot(tuple(shots)))
    assert [s.recipient.id for s in plan.skips] == ["c1-r0", "c1-r2", "c2-r0", "c2-r2"]
    assert [d.recipient.id for d in plan.defers] == ["c1-r1", "c2-r1"]
    assert plan.dials == ()


@pytest.mark.parametrize(
    ("occurred", "ends"),
    [
        (NOW - timedelta(minutes=5), NOW),  # a clock behind ours: not before the attempt began
        (NOW + timedelta(minutes=3), NOW + timedelta(minutes=3)),
        (None, NOW + timedelta(minutes=9)),  # undated: when it is applied
    ],
)
def test_a_call_ends_when_its_event_says_but_never_before_its_attempt_began(
    occurred: datetime | None, ends: datetime
) -> None:
    c = campaign(retry_policy=RetryPolicy(max_attempts=3, backoff=Fixed(timedelta(minutes=10))))
    event = ended(CallOutcome.NO_ANSWER, occurred_at=occurred)
    d = Engine().on_event(NOW + timedelta(minutes=9), c, attempt(), CALLING, event, [attempt()])
    assert d.attempt is not None and d.attempt.ended_at == ends
    assert d.retry_at == ends + timedelta(minutes=10)


def test_the_moves_made_without_check_move_are_ones_the_table_allows() -> None:
    # on_placed moves a queued recipient to calling, and a retry moves a calling one
    # back to pending, without asking check_move: the table must always allow both
    assert (RecipientStatus.QUEUED, RecipientStatus.CALLING) in RECIPIENT_TRANSITIONS
    assert (RecipientStatus.CALLING, RecipientStatus.PENDING) in RECIPIENT_TRANSITIONS


@pytest.mark.parametrize("status", list(RecipientStatus))
def test_a_retry_moves_a_recipient_only_where_the_table_allows(status: RecipientStatus) -> None:
    c = campaign()
    r = recipient(1, status=status, attempts=1)
    a = Attempt("a1", "c1", "r1", "w1", 1, r.phone, NOW - timedelta(minutes=3))
    retry = RetryAt(NOW + timedelta(minutes=10), timedelta(minutes=10), "busy")
    engine = Engine()
    if (status, RecipientStatus.PENDING) in RECIPIENT_TRANSITIONS:
        decision = engine._retry_or_final(NOW, c, a, r, retry, CallOutcome.BUSY)
        assert decision.recipient is not None
        assert decision.recipient.status is RecipientStatus.PENDING
        assert decision.recipient.next_attempt_at == retry.at
    else:
        with pytest.raises(InvalidTransition):
            engine._retry_or_final(NOW, c, a, r, retry, CallOutcome.BUSY)


@pytest.mark.parametrize("status", list(RecipientStatus))
def test_a_final_result_moves_a_recipient_only_where_the_table_allows(
    status: RecipientStatus,
) -> None:
    c = campaign()
    r = recipient(1, status=status, attempts=1)
    a = Attempt("a1", "c1", "r1", "w1", 1, r.phone, NOW - timedelta(minutes=3))
    final = Final(RecipientStatus.FAILED, CallOutcome.BUSY, "max attempts")
    engine = Engine()
    if (status, RecipientStatus.FAILED) in RECIPIENT_TRANSITIONS:
        decision = engine._retry_or_final(NOW, c, a, r, final, CallOutcome.BUSY)
        assert decision.recipient is not None
        assert decision.recipient.status is RecipientStatus.FAILED
        assert decision.recipient.outcome is CallOutcome.BUSY
        assert decision.retry_at is None and decision.reason == "max attempts"
    else:
        with pytest.raises(InvalidTransition):
            engine._retry_or_final(NOW, c, a, r, final, CallOutcome.BUSY)


def test_a_retry_in_a_finished_campaign_skips_the_recipient_and_keeps_what_was_not_given() -> None:
    c = campaign(status=CampaignStatus.CANCELLED)
    r = recipient(
        1,
        status=RecipientStatus.CALLING,
        attempts=2,
        outcome=CallOutcome.BUSY,
        duration_seconds=4.0,
    )
    a = Attempt("a1", "c1", "r1", "w1", 2, r.phone, NOW - timedelta(minutes=3))
    retry = RetryAt(NOW + timedelta(minutes=10), timedelta(minutes=10), "provider refused")
    # a call that was never placed: no outcome, no duration, and the attempt not counted
    decision = Engine()._retry_or_final(NOW, c, a, r, retry, None, counted=False)
    assert decision.recipient is not None
    assert decision.recipient.status is RecipientStatus.SKIPPED
    assert decision.recipient.outcome is CallOutcome.BUSY  # the recipient's, kept
    assert decision.recipient.duration_seconds == 4.0
    assert decision.recipient.attempts == 1
    assert decision.recipient.next_attempt_at is None
    assert decision.retry_at is None and decision.reason == "campaign cancelled"


class _NoOffset(tzinfo):
    """A tzinfo that does not know its offset: datetimes carrying it are naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize(
    "zone", [UTC, ZoneInfo("America/New_York"), timezone(timedelta(hours=2)), ZoneInfo("UTC")]
)
def test_a_call_at_any_hour_is_planned_alike_at_the_same_instant_in_any_zone(zone: tzinfo) -> None:
    rs = [recipient(i) for i in range(3)]
    in_utc = Engine().plan(NOW, Snapshot((shot(campaign(), rs),)))
    elsewhere = Engine().plan(NOW.astimezone(zone), Snapshot((shot(campaign(), rs),)))
    assert [d.recipient.id for d in elsewhere.dials] == [d.recipient.id for d in in_utc.dials]
    assert len(in_utc.dials) == 3


def test_an_instant_whose_zone_has_no_offset_is_refused_like_a_naive_one() -> None:
    unknown = NOW.replace(tzinfo=_NoOffset())
    with pytest.raises(NaiveDatetimeError):
        Engine().plan(unknown, Snapshot((shot(campaign(), [recipient(1)]),)))

"""VirtualClock: time that only moves forward, when told to."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial.errors import NaiveDatetimeError
from outdial.ports import Clock
from outdial.simulation import VirtualClock

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def test_now_is_the_start_until_the_clock_is_moved() -> None:
    clock = VirtualClock(START)
    assert clock.now() == START
    assert clock.now() == START
    assert clock.monotonic() == 0.0
    assert clock.start == START


def test_advance_moves_now_and_monotonic_by_the_same_amount() -> None:
    clock = VirtualClock(START)
    assert clock.advance(timedelta(minutes=5)) == START + timedelta(minutes=5)
    clock.advance(timedelta(seconds=0.25))
    assert clock.now() == START + timedelta(minutes=5, seconds=0.25)
    assert clock.monotonic() == pytest.approx(300.25)


def test_advance_by_zero_is_allowed_and_changes_nothing() -> None:
    clock = VirtualClock(START)
    clock.advance(timedelta(0))
    assert clock.now() == START


def test_advance_by_a_negative_amount_is_refused() -> None:
    clock = VirtualClock(START)
    with pytest.raises(ValueError, match="negative"):
        clock.advance(timedelta(seconds=-1))
    assert clock.now() == START


def test_advance_to_jumps_to_the_instant() -> None:
    clock = VirtualClock(START)
    target = START + timedelta(days=3, hours=2)
    assert clock.advance_to(target) == target
    assert clock.now() == target
    assert clock.monotonic() == (3 * 24 + 2) * 3600


def test_advance_to_the_current_instant_is_a_no_op() -> None:
    clock = VirtualClock(START)
    clock.advance_to(START)
    assert clock.now() == START


def test_advance_to_an_earlier_instant_names_both_instants() -> None:
    clock = VirtualClock(START)
    clock.advance(timedelta(hours=1))
    earlier = START + timedelta(minutes=30)
    with pytest.raises(ValueError, match="backwards") as info:
        clock.advance_to(earlier)
    message = str(info.value)
    assert "2026-03-02T10:00:00+00:00" in message
    assert "2026-03-02T09:30:00+00:00" in message
    assert clock.now() == START + timedelta(hours=1)


def test_a_refused_move_leaves_the_clock_free_for_the_next_one() -> None:
    clock = VirtualClock(START)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_to(START - timedelta(seconds=1))
    # from another thread, with a time limit: a lock left held would block it
    later = START + timedelta(minutes=1)
    mover = threading.Thread(target=clock.advance_to, args=(later,))
    mover.start()
    mover.join(timeout=10)
    assert not mover.is_alive()
    assert clock.now() == later


def test_instants_in_other_zones_are_the_same_instants_in_utc() -> None:
    new_york = ZoneInfo("America/New_York")
    clock = VirtualClock(datetime(2026, 3, 2, 4, 0, tzinfo=new_york))  # 09:00Z
    assert clock.now() == START
    assert clock.now().tzinfo is timezone.utc
    clock.advance_to(datetime(2026, 3, 2, 5, 0, tzinfo=new_york))
    assert clock.now() == START + timedelta(hours=1)


def test_naive_start_is_refused() -> None:
    with pytest.raises(NaiveDatetimeError):
        VirtualClock(datetime(2026, 3, 2, 9, 0))


def test_naive_target_is_refused_and_the_clock_stays_put() -> None:
    clock = VirtualClock(START)
    with pytest.raises(NaiveDatetimeError):
        clock.advance_to(datetime(2026, 3, 2, 10, 0))
    assert clock.now() == START


def test_virtual_clock_satisfies_the_clock_port() -> None:
    clock: Clock = VirtualClock(START)
    assert clock.now() == START


def test_concurrent_advances_are_all_counted() -> None:
    clock = VirtualClock(START)
    threads = [
        threading.Thread(target=lambda: [clock.advance(timedelta(seconds=1)) for _ in range(500)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock.now() == START + timedelta(seconds=8 * 500)
    assert clock.monotonic() == 4000.0


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.integers(min_value=0, max_value=10**9), max_size=20))
def test_monotonic_never_decreases_and_tracks_now(steps: list[int]) -> None:
    clock = VirtualClock(START)
    previous = clock.monotonic()
    for micros in steps:
        clock.advance(timedelta(microseconds=micros))
        assert clock.monotonic() >= previous
        assert clock.now() - START == timedelta(seconds=clock.monotonic())
        previous = clock.monotonic()

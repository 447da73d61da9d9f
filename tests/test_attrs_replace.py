"""The fast copies and constructors of ``outdial._attrs`` give the same values as attrs."""

from __future__ import annotations

import pickle
import weakref
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial._attrs import _generate, copier, maker, replace, twin_of
from outdial.campaign import Campaign, CampaignCounters
from outdial.dispatch import Claim, EventResult
from outdial.engine import CampaignSnapshot, Dial, Effect, Plan, ResultDecision, Snapshot
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, DialRequest, InFlightCounts, PlacedCall
from outdial.recipient import Attempt, Recipient, RecipientStatus
from outdial.retry import Final

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)

# the values the dialer copies on every call attempt (see docs/performance.md)
HOT_COPIES: list[type] = [
    Recipient,
    Attempt,
    CampaignCounters,
    InFlightCounts,
    CampaignSnapshot,
    Snapshot,
    DialRequest,
    PlacedCall,
    CallEvent,
    Campaign,
]

# any values: the copiers store what they are given (no converter, no validator)
values = st.one_of(st.none(), st.integers(), st.text(max_size=4), st.tuples(st.integers()))


def _recipient() -> Recipient:
    return Recipient(
        id="r", campaign_id="c", workspace_id="w", phone="+12125550101", created_at=NOW
    )


def _names(cls: type) -> list[str]:
    return [a.name for a in attrs.fields(cls)]


def _hash_or_error(value: object) -> int | str:
    """The value's hash, or its error's name (a recipient's variables are unhashable)."""
    try:
        return hash(value)
    except TypeError as exc:
        return type(exc).__name__


def _fields_of(value: object) -> list[Any]:
    return [getattr(value, name) for name in _names(type(value))]


def _built(cls: type, field_values: list[Any]) -> Any:
    """An instance of ``cls`` holding ``field_values`` (the descriptor copier with
    every field named reads nothing from its source)."""
    build = _generate(cls, tuple(_names(cls)), positional=True, twin=False)
    return build(None, *field_values)


@st.composite
def copies(draw: st.DrawFn) -> tuple[type, Any, tuple[str, ...], list[Any]]:
    cls = draw(st.sampled_from(HOT_COPIES))
    names = _names(cls)
    base = _built(cls, [draw(values) for _ in names])
    changed = tuple(draw(st.lists(st.sampled_from(names), unique=True)))
    return cls, base, changed, [draw(values) for _ in changed]


# -- copies -------------------------------------------------------------------------


def test_every_hot_value_class_is_copied_through_its_twin() -> None:
    for cls in HOT_COPIES:
        twin = twin_of(cls)
        assert twin is not None, cls
        assert twin_of(cls) is twin  # made once per class
        assert issubclass(twin, cls) and twin.__basicsize__ == cls.__basicsize__


@settings(max_examples=300, deadline=None)
@given(copies())
def test_twin_copy_equals_the_descriptor_copy(
    case: tuple[type, Any, tuple[str, ...], list[Any]],
) -> None:
    cls, base, changed, new_values = case
    fast: Any = copier(cls, *changed)(base, *new_values)
    slow = _generate(cls, changed, positional=True, twin=False)(base, *new_values)
    by_keywords = replace(base, **dict(zip(changed, new_values, strict=True)))
    assert type(fast) is type(slow) is type(by_keywords) is cls
    expected = [
        new_values[changed.index(name)] if name in changed else getattr(base, name)
        for name in _names(cls)
    ]
    for copy in (fast, by_keywords):
        assert all(a is b for a, b in zip(_fields_of(copy), expected, strict=True))
        assert copy == slow and _hash_or_error(copy) == _hash_or_error(slow)
        assert repr(copy) == repr(slow)


def test_a_copy_is_frozen_and_a_plain_instance_of_its_class() -> None:
    moved = copier(Recipient, "status")(_recipient(), RecipientStatus.QUEUED)
    assert type(moved) is Recipient and moved.__class__ is Recipient
    twin = twin_of(Recipient)
    assert twin is not None and not isinstance(moved, twin)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        moved.status = RecipientStatus.PENDING  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        del moved.status
    assert moved.status is RecipientStatus.QUEUED


def test_a_copy_behaves_like_an_evolved_value() -> None:
    r = _recipient()
    fast = replace(r, status=RecipientStatus.QUEUED, attempts=1)
    evolved = attrs.evolve(r, status=RecipientStatus.QUEUED, attempts=1)
    assert fast == evolved and repr(fast) == repr(evolved)
    assert _hash_or_error(fast) == _hash_or_error(evolved) == "TypeError"
    assert attrs.evolve(fast, attempts=2) == attrs.evolve(evolved, attempts=2)
    assert weakref.ref(fast)() is fast  # the weakref slot is still there


def test_a_copy_pickles_like_the_original() -> None:
    counters = CampaignCounters(total=3, pending=2, queued=1)
    moved = copier(CampaignCounters, "pending", "queued")(counters, 1, 2)
    again = pickle.loads(pickle.dumps(moved))
    assert again == moved == attrs.evolve(counters, pending=1, queued=2)
    assert hash(again) == hash(moved) == hash(attrs.evolve(counters, pending=1, queued=2))
    assert type(again) is CampaignCounters


def test_replace_equals_evolve() -> None:
    r = _recipient()
    assert replace(r, status=RecipientStatus.QUEUED, attempts=1) == attrs.evolve(
        r, status=RecipientStatus.QUEUED, attempts=1
    )
    assert replace(r) == r and replace(r) is not r


def test_replace_refuses_unknown_fields() -> None:
    with pytest.raises(TypeError, match="no field"):
        replace(_recipient(), nope=1)


def test_copier_sets_the_named_fields_in_order() -> None:
    r = _recipient()
    move = copier(Recipient, "status", "attempts")
    moved = move(r, RecipientStatus.QUEUED, 2)
    assert moved == attrs.evolve(r, status=RecipientStatus.QUEUED, attempts=2)
    with pytest.raises(TypeError, match="named twice"):
        copier(Recipient, "status", "status")
    with pytest.raises(TypeError, match="no field"):
        copier(Recipient, "nope")


# -- classes that cannot have a twin, and other layouts -------------------------------


@attrs.frozen
class Sealed:
    """Refuses subclasses (as a 'final' guard might): its copies take the fallback."""

    a: int
    b: str = "b"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("no subclasses")


class _Counting(type):
    """A metaclass that sees every instantiation: a twin must not bypass it silently."""

    made = 0

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        _Counting.made += 1
        return super().__call__(*args, **kwargs)


@attrs.frozen
class Counted(metaclass=_Counting):
    a: int
    b: str = "b"


@attrs.frozen(slots=False)
class WithDict:
    a: int
    b: str = "b"


@attrs.frozen(weakref_slot=False)
class NoWeakref:
    a: int
    b: str = "b"


@attrs.frozen
class Base:
    a: int


@attrs.frozen
class Derived(Base):
    b: str = "b"


def test_a_class_that_refuses_its_twin_is_copied_through_its_descriptors() -> None:
    assert twin_of(Sealed) is None
    value = Sealed(1)
    moved = copier(Sealed, "b")(value, "c")
    assert moved == Sealed(1, "c") and type(moved) is Sealed
    assert replace(value, a=2) == Sealed(2)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        moved.a = 3  # type: ignore[misc]


def test_a_class_whose_metaclass_intercepts_instantiation_gets_no_twin() -> None:
    value = Counted(1)
    made = _Counting.made
    assert twin_of(Counted) is None
    moved = replace(value, b="c")
    assert moved == Counted(1, "c") and type(moved) is Counted
    assert _Counting.made == made + 1  # only the comparison value went through it


@pytest.mark.parametrize("cls", [WithDict, NoWeakref, Derived])
def test_other_layouts_are_copied_correctly(cls: Any) -> None:
    assert twin_of(cls) is not None
    value = cls(1)
    moved = replace(value, b="c")
    assert moved == cls(1, "c") and type(moved) is cls
    assert copier(cls, "a")(value, 5) == attrs.evolve(value, a=5)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        moved.a = 3


def test_a_subclass_and_its_base_get_their_own_twins() -> None:
    assert twin_of(Base) is not twin_of(Derived)
    assert type(replace(Base(1), a=2)) is Base
    assert type(replace(Derived(1), a=2)) is Derived


# -- makers -----------------------------------------------------------------------------


def test_maker_builds_the_same_value_as_the_constructor() -> None:
    r, a = _recipient(), object()
    cases: list[tuple[Any, Any, tuple[Any, ...]]] = [
        (
            ResultDecision(Effect.APPLIED, a, r, None, NOW, "why"),  # type: ignore[arg-type]
            maker(
                ResultDecision,
                "effect",
                "attempt",
                "recipient",
                "suppress_phone",
                "retry_at",
                "reason",
            ),
            (Effect.APPLIED, a, r, None, NOW, "why"),
        ),
        (
            ResultDecision(Effect.DUPLICATE, reason="seen"),
            maker(ResultDecision, "effect", "reason"),
            (Effect.DUPLICATE, "seen"),
        ),
        (
            Plan((), (), (), (), NOW),
            maker(Plan, "transitions", "dials", "skips", "defers", "wake_at"),
            ((), (), (), (), NOW),
        ),
        (Dial("c", r, 2), maker(Dial, "campaign_id", "recipient", "attempt_number"), ("c", r, 2)),
        (Claim(a, a, "sim"), maker(Claim, "attempt", "request", "provider"), (a, a, "sim")),  # type: ignore[arg-type]
        (
            EventResult(Effect.APPLIED, "a1", RecipientStatus.PENDING, None, True),
            maker(EventResult, "effect", "attempt_id", "recipient_status", "reason", "freed"),
            (Effect.APPLIED, "a1", RecipientStatus.PENDING, None, True),
        ),
        (
            Final(RecipientStatus.FAILED, CallOutcome.BUSY, "busy"),
            maker(Final, "outcome", "status", "reason"),  # any order: values follow the names
            (CallOutcome.BUSY, RecipientStatus.FAILED, "busy"),
        ),
    ]
    for expected, make, args in cases:
        made = make(*args)
        assert type(made) is type(expected)
        assert made == expected and repr(made) == repr(expected)
        assert _hash_or_error(made) == _hash_or_error(expected)
        assert _fields_of(made) == _fields_of(expected)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            made.reason = "changed"


@attrs.frozen
class WithFactory:
    a: int
    items: list[int] = attrs.field(factory=list)
    shared: tuple[int, ...] = ()


def test_maker_calls_a_factory_once_per_value_and_shares_plain_defaults() -> None:
    make = maker(WithFactory, "a")
    first, second = make(1), make(2)
    assert first == WithFactory(1) and second == WithFactory(2)
    assert first.items is not second.items
    assert first.shared is second.shared is WithFactory(3).shared


@attrs.frozen
class Checked:
    a: int

    def __attrs_post_init__(self) -> None:
        if self.a < 0:
            raise ValueError("negative")


def _as_tuple(items: Iterable[int]) -> tuple[int, ...]:
    return tuple(items)


@attrs.frozen
class Converted:
    a: int
    b: tuple[int, ...] = attrs.field(default=[], converter=_as_tuple)


@attrs.frozen
class SelfFactory:
    a: int
    b: int = attrs.field(default=attrs.Factory(lambda self: self.a, takes_self=True))


def test_maker_refuses_what_it_could_not_build_like_the_constructor() -> None:
    with pytest.raises(TypeError, match="no default"):
        maker(Dial, "campaign_id", "recipient")
    with pytest.raises(TypeError, match="no field"):
        maker(Dial, "nope")
    with pytest.raises(TypeError, match="named twice"):
        maker(Final, "status", "status", "outcome", "reason")
    with pytest.raises(TypeError, match="__attrs_post_init__"):
        maker(Checked, "a")
    with pytest.raises(TypeError, match="converts its default"):
        maker(Converted, "a")
    with pytest.raises(TypeError, match="taking self"):
        maker(SelfFactory, "a")
    assert maker(Converted, "a", "b")(1, (2,)) == Converted(1, (2,))
    assert maker(SelfFactory, "a", "b")(1, 1) == SelfFactory(1)


def test_maker_falls_back_for_a_class_that_refuses_its_twin() -> None:
    made = maker(Sealed, "a")(1)
    assert made == Sealed(1) and type(made) is Sealed

"""Retry policy: when (and whether) to call a recipient again.

A :class:`RetryPolicy` turns the facts about an attempt that just ended (its
outcome, the start instants of every attempt so far, when it ended, what the
provider said) into a :data:`RetryDecision`:

* :class:`RetryAt` - call again, no earlier than ``at`` (always in UTC);
* :class:`Final` - stop, with the recipient's final status and a reason.

The pieces are small frozen values with pure methods, composed like tenacity's
wait/stop objects:

* backoffs (:class:`Fixed`, :class:`Exponential`, :class:`DecorrelatedJitter`)
  say how long to wait before retry number *n*;
* attempt caps (:class:`RollingCap`, :class:`DailyCap`) say when the next
  attempt is allowed at the earliest ("3 per 24 h", "2 per local calendar day");
* :func:`land_in_window` moves a retry to the next opening of a calling
  calendar, so retries never go out off-hours.

Nothing here reads a clock or draws a random number of its own: the instants
are arguments, and jittered backoffs need an injected :class:`RandomSource`
(``random.Random(seed)`` is one).

``max_attempts`` counts every attempt, the first call included, and is one
budget shared by all outcomes: ``max_attempts=3`` means at most two retries
whatever mix of busy / no answer / voicemail / error the attempts end with.
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Protocol, TypeAlias, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from outdial._attrs import maker
from outdial._memo import Memo
from outdial._time import UTC, local_midnight, require_aware, to_utc
from outdial.errors import ConfigurationError, InvalidRetryPolicy, UnknownTimeZone
from outdial.outcomes import DEFAULT_RETRYABLE_OUTCOMES, CallOutcome
from outdial.recipient import RecipientStatus

__all__ = [
    "NEVER_RETRIED_OUTCOMES",
    "AttemptCap",
    "Backoff",
    "CalendarLike",
    "DailyCap",
    "DecorrelatedJitter",
    "Exponential",
    "Final",
    "Fixed",
    "Jitter",
    "RandomSource",
    "RetryAt",
    "RetryDecision",
    "RetryPolicy",
    "RollingCap",
    "land_in_window",
]

#: Outcomes a policy refuses to retry: the number is wrong, or the person said no.
NEVER_RETRIED_OUTCOMES: frozenset[CallOutcome] = frozenset(
    {
        CallOutcome.ANSWERED,
        CallOutcome.INVALID_NUMBER,
        CallOutcome.DECLINED,
        CallOutcome.OPTED_OUT,
    }
)

_ZERO = timedelta(0)
# A cap whose earliest_allowed keeps moving is not a cap we can satisfy; the
# built-in caps settle in at most len(caps) + 1 rounds.
_MAX_CAP_ROUNDS = 64


# -- protocols ---------------------------------------------------------------------


class RandomSource(Protocol):
    """Where jitter comes from: ``random.Random(seed)`` satisfies it.

    ``random()`` returns a float in ``[0, 1)``. The core never creates one.
    """

    def random(self) -> float: ...


@runtime_checkable
class Backoff(Protocol):
    """How long to wait before a retry.

    ``retry_number`` is 1 for the first retry (the second attempt); ``previous``
    is the delay used before this one (only :class:`DecorrelatedJitter` uses it);
    ``rng`` is needed by jittered backoffs only.
    """

    def delay(
        self, retry_number: int, previous: timedelta | None, rng: RandomSource | None
    ) -> timedelta: ...


@runtime_checkable
class AttemptCap(Protocol):
    """A limit on attempts over time.

    ``earliest_allowed(attempts, now)`` takes the start instants of previous
    attempts and returns ``None`` when another attempt is allowed at ``now``,
    else the first instant after ``now`` at which one is.
    """

    def earliest_allowed(self, attempts: Sequence[datetime], now: datetime) -> datetime | None: ...


class CalendarLike(Protocol):
    """The part of ``outdial.calendar.Calendar`` that :func:`land_in_window` needs.

    ``next_open(t)`` returns ``t`` when the calendar is open at ``t``, the next
    opening after ``t`` otherwise, or ``None`` when it never opens again.
    """

    def next_open(self, t: datetime, /) -> datetime | None: ...


# -- small helpers -------------------------------------------------------------------


def _require_timedelta(field: str, value: object) -> timedelta:
    if not isinstance(value, timedelta):
        raise InvalidRetryPolicy(field, value, "must be a datetime.timedelta")
    if value <= _ZERO:
        raise InvalidRetryPolicy(field, value, "must be positive")
    return value


def _require_count(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRetryPolicy(field, value, "must be an integer")
    if value < 1:
        raise InvalidRetryPolicy(field, value, "must be at least 1")
    return value


def _check_retry_number(retry_number: int) -> int:
    if isinstance(retry_number, bool) or not isinstance(retry_number, int) or retry_number < 1:
        raise ConfigurationError("retry_number", retry_number, "must be an integer >= 1")
    return retry_number


def _draw(rng: RandomSource | None) -> float:
    """One number in [0, 1] from the injected source (clamped: a bad source cannot break caps)."""
    if rng is None:
        raise ConfigurationError(
            "rng",
            None,
            "jitter needs an injected random source (pass rng=random.Random(seed))",
        )
    r = float(rng.random())
    if not 0.0 <= r <= 1.0:  # also false for NaN
        r = 0.0 if not r > 0.0 else 1.0
    return r


def _us(value: timedelta) -> int:
    """Whole microseconds of ``value`` (delay arithmetic is done on ints: fast, no overflow)."""
    return (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds


def _between(low_us: int, high_us: int, fraction: float) -> int:
    """``low + (high - low) * fraction``, rounded to a microsecond, within ``[low, high]``."""
    return min(high_us, max(low_us, low_us + round((high_us - low_us) * fraction)))


def _human(value: timedelta) -> str:
    """A short readable duration for reasons: ``30min``, ``1d 2h``, ``12.345s``."""
    return _HUMAN[value]


def _human_text(value: timedelta) -> str:
    if value < _ZERO:
        return "-" + _human(-value)
    if value.microseconds:
        return f"{value.total_seconds():.3f}s"
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        amount, total = divmod(total, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return " ".join(parts)


#: ``_human`` of the delays seen so far (a policy uses a handful of them)
_HUMAN: Memo[timedelta, str] = Memo(_human_text)


def _load_zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise UnknownTimeZone(name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise UnknownTimeZone(name) from exc


# -- backoffs ----------------------------------------------------------------------------


class Jitter(str, enum.Enum):
    """Randomisation of :class:`Exponential` delays (v is the un-jittered delay).

    ``NONE`` waits v, ``FULL`` waits U(0, v), ``EQUAL`` waits v/2 + U(0, v/2).
    """

    NONE = "none"
    FULL = "full"
    EQUAL = "equal"

    def __str__(self) -> str:
        return self.value


def _to_jitter(value: Jitter | str, field: str = "jitter") -> Jitter:
    try:
        return Jitter(value)
    except ValueError:
        known = ", ".join(j.value for j in Jitter)
        raise InvalidRetryPolicy(field, value, f"is not one of {known}") from None


@attrs.frozen
class Fixed:
    """Wait the same ``delay`` before every retry.

    Build it as ``Fixed(timedelta(minutes=30))`` or ``Fixed(delay=...)``; the
    value is read back as :attr:`interval` (``delay`` is the Backoff method).
    """

    interval: timedelta = attrs.field(alias="delay")

    @interval.validator
    def _check_interval(self, _attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
        _require_timedelta("delay", value)

    def delay(
        self, retry_number: int, previous: timedelta | None, rng: RandomSource | None
    ) -> timedelta:
        """``interval``, whatever the retry number."""
        _check_retry_number(retry_number)
        return self.interval

    def __repr__(self) -> str:
        return f"Fixed(delay={self.interval!r})"


@attrs.frozen
class Exponential:
    """Exponential backoff: v = min(cap, base * multiplier ** (retry_number - 1)).

    Waits v (``Jitter.NONE``), U(0, v) (``FULL``) or v/2 + U(0, v/2) (``EQUAL``).
    Jitter needs ``rng``; without one :meth:`delay` raises ``ConfigurationError``.
    """

    base: timedelta = attrs.field()
    cap: timedelta = attrs.field()
    multiplier: float = attrs.field(default=2.0)
    jitter: Jitter = attrs.field(default=Jitter.NONE, converter=_to_jitter)

    @base.validator
    def _check_base(self, _attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
        _require_timedelta("base", value)

    @cap.validator
    def _check_cap(self, _attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
        _require_timedelta("cap", value)
        if value < self.base:
            raise InvalidRetryPolicy(
                "cap", value, f"must not be shorter than base ({_human(self.base)})"
            )

    @multiplier.validator
    def _check_multiplier(self, _attribute: attrs.Attribute[float], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRetryPolicy("multiplier", value, "must be a number")
        if not math.isfinite(value) or value < 1:
            raise InvalidRetryPolicy("multiplier", value, "must be a finite number >= 1")

    def ceiling(self, retry_number: int) -> timedelta:
        """The un-jittered delay v for ``retry_number`` (never above ``cap``)."""
        return timedelta(microseconds=self._ceiling_us(retry_number))

    def _ceiling_us(self, retry_number: int) -> int:
        exponent = _check_retry_number(retry_number) - 1
        cap_us = _us(self.cap)
        try:
            raw_us = _us(self.base) * float(self.multiplier) ** exponent
        except OverflowError:
            return cap_us
        return cap_us if raw_us >= cap_us else min(cap_us, round(raw_us))

    def delay(
        self, retry_number: int, previous: timedelta | None, rng: RandomSource | None
    ) -> timedelta:
        """The delay before retry ``retry_number``, within ``[0, cap]``."""
        v_us = self._ceiling_us(retry_number)
        if self.jitter is Jitter.NONE:
            return timedelta(microseconds=v_us)
        r = _draw(rng)
        low_us = 0 if self.jitter is Jitter.FULL else round(v_us / 2)
        return timedelta(microseconds=_between(low_us, v_us, r))


@attrs.frozen
class DecorrelatedJitter:
    """AWS "decorrelated jitter": min(cap, U(base, 3 * previous)), previous defaulting to base.

    Always within ``[base, cap]`` (a ``previous`` below base/3 draws from
    ``[base, base]``). Needs ``rng``.
    """

    base: timedelta = attrs.field()
    cap: timedelta = attrs.field()

    @base.validator
    def _check_base(self, _attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
        _require_timedelta("base", value)

    @cap.validator
    def _check_cap(self, _attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
        _require_timedelta("cap", value)
        if value < self.base:
            raise InvalidRetryPolicy(
                "cap", value, f"must not be shorter than base ({_human(self.base)})"
            )

    def delay(
        self, retry_number: int, previous: timedelta | None, rng: RandomSource | None
    ) -> timedelta:
        """A draw from U(base, max(base, 3 * previous)), capped at ``cap``."""
        _check_retry_number(retry_number)
        r = _draw(rng)
        low_us = _us(self.base)
        # In microseconds: 3 * previous may not fit in a timedelta.
        high_us = max(low_us, 3 * _us(self.base if previous is None else previous))
        return timedelta(microseconds=min(_us(self.cap), _between(low_us, high_us, r)))


# -- attempt caps ------------------------------------------------------------------------


@attrs.frozen
class RollingCap:
    """At most ``max_attempts`` attempts in any sliding ``window`` (e.g. 3 per 24 h).

    An attempt at ``t`` is allowed when fewer than ``max_attempts`` earlier
    attempts started in ``(t - window, t]``.
    """

    max_attempts: int = attrs.field()
    window: timedelta = attrs.field()

    @max_attempts.validator
    def _check_max(self, _attribute: attrs.Attribute[int], value: int) -> None:
        _require_count("max_attempts", value)

    @window.validator
    def _check_window(self, _attribute: attrs.Attribute[timedelta], value: timedelta) -> None:
        _require_timedelta("window", value)

    def earliest_allowed(self, attempts: Sequence[datetime], now: datetime) -> datetime | None:
        """``None`` if an attempt is allowed at ``now``, else when the oldest attempt
        that counts leaves the window (in UTC)."""
        require_aware(now, "now")
        if len(attempts) < self.max_attempts:
            for a in attempts:
                require_aware(a, "attempts")
            return None
        starts = sorted(to_utc(a, "attempts") for a in attempts)
        # The max_attempts-th most recent attempt must have left the window.
        free_at = starts[-self.max_attempts] + self.window
        return free_at if free_at > now else None

    def __str__(self) -> str:
        return f"at most {self.max_attempts} attempts per {_human(self.window)}"


@attrs.frozen
class DailyCap:
    """At most ``max_attempts`` attempts per local calendar day in ``timezone``.

    When the local day of ``now`` already has ``max_attempts`` attempts, the next
    attempt is allowed from the next local midnight (DST-correct: 23 and 25 hour
    days, and days that start at 01:00, are handled by zoneinfo).
    """

    max_attempts: int = attrs.field()
    timezone: str = attrs.field(default="UTC")

    @max_attempts.validator
    def _check_max(self, _attribute: attrs.Attribute[int], value: int) -> None:
        _require_count("max_attempts", value)

    @timezone.validator
    def _check_timezone(self, _attribute: attrs.Attribute[str], value: str) -> None:
        _load_zone(value)

    def earliest_allowed(self, attempts: Sequence[datetime], now: datetime) -> datetime | None:
        """``None`` if the local day of ``now`` has room, else its next local midnight (UTC)."""
        zone = ZoneInfo(self.timezone)
        today = require_aware(now, "now").astimezone(zone).date()
        used = sum(
            1 for a in attempts if require_aware(a, "attempts").astimezone(zone).date() == today
        )
        if used < self.max_attempts:
            return None
        return local_midnight(today + timedelta(days=1), zone)

    def __str__(self) -> str:
        return f"at most {self.max_attempts} attempts per calendar day in {self.timezone}"


def _settle(caps: Sequence[AttemptCap], attempts: Sequence[datetime], start: datetime) -> datetime:
    """The first instant >= ``start`` that every cap allows.

    Each cap's answer at the current candidate may push it later; repeat until no
    cap objects. Built-in caps never object again once they allow an instant (all
    attempts are in the past), so this settles in a few rounds; a custom cap that
    keeps moving is given up on after ``_MAX_CAP_ROUNDS`` rounds.
    """
    candidate = start
    for _ in range(_MAX_CAP_ROUNDS):
        pushed = candidate
        for cap in caps:
            allowed = cap.earliest_allowed(attempts, pushed)
            if allowed is not None and allowed > pushed:
                pushed = to_utc(allowed, "earliest_allowed")
        if pushed == candidate:
            return candidate
        candidate = pushed
    return candidate


# -- decisions ---------------------------------------------------------------------------


@attrs.frozen
class RetryAt:
    """Retry no earlier than ``at``; ``delay`` is ``at - ended_at``.

    :meth:`RetryPolicy.decide` and :func:`land_in_window` give ``at`` in UTC.
    """

    at: datetime = attrs.field(validator=lambda _i, _a, v: require_aware(v, "RetryAt.at"))
    delay: timedelta
    reason: str


@attrs.frozen
class Final:
    """Stop retrying: the recipient ends ``status`` (completed or failed) for ``reason``."""

    status: RecipientStatus
    outcome: CallOutcome | None
    reason: str


RetryDecision: TypeAlias = RetryAt | Final

# built on every decision (see outdial._attrs.maker: no validator runs, so only for an
# ``at`` known to be aware, as :meth:`RetryPolicy.decide`'s UTC instants are)
_retry_at = maker(RetryAt, "at", "delay", "reason")
_final = maker(Final, "status", "outcome", "reason")
_COMPLETED = RecipientStatus.COMPLETED
_FAILED = RecipientStatus.FAILED
#: the outcomes whose ``connected`` is true (read by decide: cheaper than the property)
_CONNECTED = frozenset(outcome for outcome in CallOutcome if outcome.connected)


# -- the policy ----------------------------------------------------------------------------


def _to_outcome(value: CallOutcome | str, field: str) -> CallOutcome:
    try:
        return CallOutcome(value)
    except ValueError:
        known = ", ".join(o.value for o in CallOutcome)
        raise InvalidRetryPolicy(field, value, f"is not a call outcome ({known})") from None


def _to_outcome_set(value: Iterable[CallOutcome | str]) -> frozenset[CallOutcome]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidRetryPolicy("retry_on", value, "must be a collection of call outcomes")
    return frozenset(_to_outcome(v, "retry_on") for v in value)


def _to_outcome_backoff(
    value: Mapping[CallOutcome, Backoff] | Mapping[str, Backoff],
) -> Mapping[CallOutcome, Backoff]:
    if not isinstance(value, Mapping):
        raise InvalidRetryPolicy("outcome_backoff", value, "must be a mapping outcome -> backoff")
    frozen: dict[CallOutcome, Backoff] = {}
    for key, backoff in value.items():
        outcome = _to_outcome(key, "outcome_backoff")
        if not isinstance(backoff, Backoff):
            raise InvalidRetryPolicy(
                f"outcome_backoff.{outcome.value}", backoff, "is not a Backoff (no delay method)"
            )
        frozen[outcome] = backoff
    return MappingProxyType(frozen)


def _to_caps(value: Iterable[AttemptCap]) -> tuple[AttemptCap, ...]:
    if not isinstance(value, Iterable):
        raise InvalidRetryPolicy("caps", value, "must be a sequence of attempt caps")
    caps = tuple(value)
    for index, cap in enumerate(caps):
        if not isinstance(cap, AttemptCap):
            raise InvalidRetryPolicy(
                f"caps[{index}]", cap, "is not an AttemptCap (no earliest_allowed method)"
            )
    return caps


@attrs.frozen
class RetryPolicy:
    """Whether and when to retry a recipient after an attempt.

    ``max_attempts`` counts every attempt (3 = at most 2 retries) and is shared
    by all outcomes. ``retry_on`` lists the outcomes worth another attempt;
    answered, invalid_number, declined and opted_out are refused. ``backoff`` is
    the default delay, ``outcome_backoff`` overrides it per outcome (busy: 5 min).
    ``caps`` limit attempts over time; ``honour_retry_after`` raises a delay to
    the provider's Retry-After.
    """

    max_attempts: int = attrs.field(default=3)
    retry_on: frozenset[CallOutcome] = attrs.field(
        default=DEFAULT_RETRYABLE_OUTCOMES, converter=_to_outcome_set
    )
    backoff: Backoff = attrs.field(default=Fixed(timedelta(minutes=30)))
    outcome_backoff: Mapping[CallOutcome, Backoff] = attrs.field(
        factory=dict, converter=_to_outcome_backoff, hash=False
    )
    caps: tuple[AttemptCap, ...] = attrs.field(default=(), converter=_to_caps)
    honour_retry_after: bool = attrs.field(default=True)

    @max_attempts.validator
    def _check_max_attempts(self, _attribute: attrs.Attribute[int], value: int) -> None:
        _require_count("max_attempts", value)

    @retry_on.validator
    def _check_retry_on(
        self, _attribute: attrs.Attribute[frozenset[CallOutcome]], value: frozenset[CallOutcome]
    ) -> None:
        refused = sorted(o.value for o in value & NEVER_RETRIED_OUTCOMES)
        if refused:
            raise InvalidRetryPolicy("retry_on", refused[0], "is never retried")

    @backoff.validator
    def _check_backoff(self, _attribute: attrs.Attribute[Backoff], value: Backoff) -> None:
        if not isinstance(value, Backoff):
            raise InvalidRetryPolicy("backoff", value, "is not a Backoff (no delay method)")

    @honour_retry_after.validator
    def _check_honour(self, _attribute: attrs.Attribute[bool], value: bool) -> None:
        if not isinstance(value, bool):
            raise InvalidRetryPolicy("honour_retry_after", value, "must be true or false")

    def decide(
        self,
        *,
        outcome: CallOutcome,
        attempts: Sequence[datetime],
        ended_at: datetime,
        retryable: bool | None = None,
        retry_after: timedelta | None = None,
        previous_delay: timedelta | None = None,
        rng: RandomSource | None = None,
    ) -> RetryDecision:
        """Decide what happens after the attempt that ended at ``ended_at``.

        ``attempts`` are the start instants of every attempt so far, the one that
        just ended included, so ``len(attempts)`` is the attempt count.

        * An outcome not in ``retry_on``, or ``retryable=False`` from the
          provider, is final: ``completed`` if the call connected (answered,
          voicemail, opted_out), else ``failed``. ``retryable=True`` does not
          override ``retry_on``.
        * A retryable outcome with the budget spent is final the same way
          (voicemail then ends ``completed``, since it connected).
        * Otherwise :class:`RetryAt`: the backoff for the outcome gives the delay
          for retry ``len(attempts)``, raised to ``retry_after`` when honoured,
          then moved later until every cap allows it.
        """
        if type(outcome) is not CallOutcome:
            outcome = _to_outcome(outcome, "outcome")
        name: str = outcome._value_  # outcome.value without the enum property's call
        # instants already in UTC (the usual case) are kept as they are: to_utc would
        # return them unchanged
        ended = ended_at if ended_at.tzinfo is UTC else to_utc(ended_at, "ended_at")
        if not attempts:
            raise ConfigurationError(
                "attempts", list(attempts), "must include the attempt that just ended"
            )
        # kept as given when all in UTC (the usual case; a loop is cheaper than a list
        # comprehension for the one to three of them)
        starts: Sequence[datetime] = attempts
        for start in attempts:
            if start.tzinfo is not UTC:
                starts = [to_utc(s, "attempts") for s in attempts]
                break
        connected = outcome in _CONNECTED  # outcome.connected
        final_status = _COMPLETED if connected else _FAILED

        if outcome not in self.retry_on:
            if connected:
                return _final(final_status, outcome, f"{name}: call connected, not retried")
            return _final(final_status, outcome, f"{name} is not retried")
        if retryable is False:
            return _final(final_status, outcome, f"{name}: provider says not retryable")
        count = len(starts)
        max_attempts = self.max_attempts
        if count >= max_attempts:
            last = f"last outcome {name}" + (", connected" if connected else "")
            return _final(final_status, outcome, f"max attempts {max_attempts} reached ({last})")

        retry_number = count
        backoff = self.outcome_backoff.get(outcome, self.backoff)
        delay = max(_ZERO, backoff.delay(retry_number, previous_delay, rng))
        reason = f"{name}: retry {retry_number} of {max_attempts - 1} in {_human(delay)}"
        if retry_after is not None and self.honour_retry_after and retry_after > delay:
            delay = retry_after
            reason += f", raised to Retry-After {_human(retry_after)}"
        wanted = ended + delay
        caps = self.caps
        if not caps:
            return _retry_at(wanted, delay, reason)  # wanted - ended is delay
        at = _settle(caps, starts, wanted)
        if at > wanted:
            holding = "; ".join(
                str(cap) for cap in caps if cap.earliest_allowed(starts, wanted) is not None
            )
            reason += f"; held until {at.isoformat()} by {holding or 'attempt caps'}"
        return _retry_at(at, at - ended, reason)  # _settle gives UTC instants

    def may_retry(self, outcome: CallOutcome, *, retryable: bool | None = None) -> bool:
        """Whether an attempt that ended with ``outcome`` can be retried at all, budget and
        caps aside.

        ``False`` (an outcome not in ``retry_on``, or ``retryable=False`` from the
        provider) means :meth:`decide` returns a :class:`Final` whatever ``attempts``
        holds, so a caller need not read the attempt history to decide it.
        """
        if type(outcome) is not CallOutcome:
            outcome = _to_outcome(outcome, "outcome")
        return retryable is not False and outcome in self.retry_on

    def earliest_allowed(self, attempts: Sequence[datetime], now: datetime) -> datetime | None:
        """When the caps allow the next attempt: ``None`` = may dial at ``now``.

        Only the caps are consulted (not ``max_attempts``); the engine calls this at
        dial time with the start instants of the recipient's attempts.
        """
        start = to_utc(now, "now")
        at = _settle(self.caps, attempts, start)
        return at if at > start else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (see :meth:`from_dict` for the shape)."""
        result: dict[str, Any] = _converter.unstructure(self, RetryPolicy)
        return result

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetryPolicy:
        """Build a policy from :meth:`to_dict`'s shape; missing keys take defaults.

        ``{"max_attempts": 3, "retry_on": ["busy", "no_answer"],
        "backoff": {"type": "exponential", "base_seconds": 60, "cap_seconds": 3600,
        "multiplier": 2, "jitter": "full"},
        "outcome_backoff": {"busy": {"type": "fixed", "seconds": 300}},
        "caps": [{"type": "rolling", "max_attempts": 3, "window_seconds": 86400},
        {"type": "daily", "max_attempts": 2, "timezone": "Europe/Paris"}],
        "honour_retry_after": true}``. Backoff types: ``fixed`` (seconds),
        ``exponential`` (base_seconds, cap_seconds, multiplier, jitter),
        ``decorrelated`` (base_seconds, cap_seconds). Bad input raises
        :class:`InvalidRetryPolicy` naming the dotted field, e.g.
        ``backoff.cap_seconds: -1 must be positive``; unknown keys are refused.
        """
        policy: RetryPolicy = _converter.structure(data, RetryPolicy)
        return policy


def land_in_window(decision: RetryDecision, calendar: CalendarLike) -> RetryDecision:
    """Move a retry into the calendar's next open window.

    A :class:`RetryAt` outside the calendar's hours moves to
    ``calendar.next_open(at)`` (its delay grows by the same amount and the reason
    says so); one already inside is returned unchanged. When the calendar never
    opens again the retry becomes ``Final(FAILED, reason="no permitted calling
    window")``. A :class:`Final` is returned unchanged. A retry is never moved
    earlier, so caps it satisfied stay satisfied.
    """
    if isinstance(decision, Final):
        return decision
    opening = calendar.next_open(decision.at)
    if opening is None:
        return Final(RecipientStatus.FAILED, None, "no permitted calling window")
    opening = to_utc(opening, "next_open")
    if opening <= decision.at:
        return decision
    return RetryAt(
        at=opening,
        delay=decision.delay + (opening - decision.at),
        reason=f"{decision.reason}; moved to the next calling window at {opening.isoformat()}",
    )


# -- serialization (cattrs, private) -------------------------------------------------------
#
# Unstructuring uses cattrs-generated functions with renamed keys; structuring uses
# hand-written tagged-union hooks so that every error names the dotted JSON field
# (``caps[1].timezone``) and the value that was given.

_converter = cattrs.Converter()
# The protocols are the dispatch keys of the tagged-union hooks; mypy refuses an
# abstract class where ``type[T]`` is expected, hence the untyped aliases.
_BACKOFF_TYPE: Any = Backoff
_CAP_TYPE: Any = AttemptCap


def _join(prefix: str, field: str) -> str:
    if not field:
        return prefix
    if not prefix:
        return field
    return prefix + field if field.startswith("[") else f"{prefix}.{field}"


@contextlib.contextmanager
def _within(prefix: str) -> Iterator[None]:
    """Re-raise configuration errors from the block with ``prefix`` on their field."""
    try:
        yield
    except ConfigurationError as exc:
        raise InvalidRetryPolicy(_join(prefix, exc.field), exc.value, exc.reason) from exc


def _seconds_out(value: timedelta) -> int | float:
    seconds = value.total_seconds()
    return int(seconds) if seconds.is_integer() else seconds


def _structure_int(value: object, _type: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRetryPolicy("", value, "must be an integer")
    return value


def _structure_float(value: object, _type: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRetryPolicy("", value, "must be a finite number")
    return float(value)


def _structure_bool(value: object, _type: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidRetryPolicy("", value, "must be true or false")
    return value


def _structure_str(value: object, _type: object) -> str:
    if not isinstance(value, str):
        raise InvalidRetryPolicy("", value, "must be a string")
    return value


def _structure_seconds(value: object, _type: object) -> timedelta:
    seconds = _structure_float(value, float)
    if seconds <= 0:
        raise InvalidRetryPolicy("", value, "must be positive")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise InvalidRetryPolicy("", value, "is too large") from None


def _structure_outcome(value: object, _type: object) -> CallOutcome:
    return _to_outcome(_structure_str(value, str), "")


def _structure_jitter(value: object, _type: object) -> Jitter:
    return _to_jitter(_structure_str(value, str), "")


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRetryPolicy("", value, f"must be an object ({what})")
    return value


def _list(value: object, what: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InvalidRetryPolicy("", value, f"must be a list ({what})")
    return value


@attrs.frozen
class _Kind:
    """One member of a tagged union: its class and JSON key -> (init keyword, type)."""

    cls: Callable[..., Any]
    fields: Mapping[str, tuple[str, type]]
    required: frozenset[str]


def _structure_tagged(data: object, kinds: Mapping[str, _Kind], what: str) -> Any:
    raw = _mapping(data, f'a {what} with a "type"')
    known_tags = ", ".join(kinds)
    if "type" not in raw:
        raise InvalidRetryPolicy("type", None, f"is required (one of {known_tags})")
    tag = raw["type"]
    if not isinstance(tag, str) or tag not in kinds:
        raise InvalidRetryPolicy("type", tag, f"is not one of {known_tags}")
    kind = kinds[tag]
    for key in raw:
        if key != "type" and key not in kind.fields:
            known = ", ".join(["type", *kind.fields])
            raise InvalidRetryPolicy(key, raw[key], f"is not a field of a {tag} {what} ({known})")
    kwargs: dict[str, Any] = {}
    keyword_to_key = {keyword: key for key, (keyword, _) in kind.fields.items()}
    for key, (keyword, field_type) in kind.fields.items():
        if key not in raw:
            if key in kind.required:
                raise InvalidRetryPolicy(key, None, "is required")
            continue
        with _within(key):
            kwargs[keyword] = _converter.structure(raw[key], field_type)
    try:
        return kind.cls(**kwargs)
    except ConfigurationError as exc:
        key = keyword_to_key.get(exc.field, exc.field)
        raise InvalidRetryPolicy(key, raw.get(key, exc.value), exc.reason) from exc


_BACKOFF_KINDS: Mapping[str, _Kind] = {
    "fixed": _Kind(Fixed, {"seconds": ("delay", timedelta)}, frozenset({"seconds"})),
    "exponential": _Kind(
        Exponential,
        {
            "base_seconds": ("base", timedelta),
            "cap_seconds": ("cap", timedelta),
            "multiplier": ("multiplier", float),
            "jitter": ("jitter", Jitter),
        },
        frozenset({"base_seconds", "cap_seconds"}),
    ),
    "decorrelated": _Kind(
        DecorrelatedJitter,
        {"base_seconds": ("base", timedelta), "cap_seconds": ("cap", timedelta)},
        frozenset({"base_seconds", "cap_seconds"}),
    ),
}

_CAP_KINDS: Mapping[str, _Kind] = {
    "rolling": _Kind(
        RollingCap,
        {"max_attempts": ("max_attempts", int), "window_seconds": ("window", timedelta)},
        frozenset({"max_attempts", "window_seconds"}),
    ),
    "daily": _Kind(
        DailyCap,
        {"max_attempts": ("max_attempts", int), "timezone": ("timezone", str)},
        frozenset({"max_attempts"}),
    ),
}

_BACKOFF_TAGS: Mapping[type, str] = {
    Fixed: "fixed",
    Exponential: "exponential",
    DecorrelatedJitter: "decorrelated",
}
_CAP_TAGS: Mapping[type, str] = {RollingCap: "rolling", DailyCap: "daily"}


def _structure_backoff(data: object, _type: object) -> Backoff:
    backoff: Backoff = _structure_tagged(data, _BACKOFF_KINDS, "backoff")
    return backoff


def _structure_cap(data: object, _type: object) -> AttemptCap:
    cap: AttemptCap = _structure_tagged(data, _CAP_KINDS, "cap")
    return cap


def _structure_policy(data: object, _type: object) -> RetryPolicy:
    raw = _mapping(data, "a retry policy")
    fields = {a.name for a in attrs.fields(RetryPolicy)}
    for key in raw:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise InvalidRetryPolicy(key, raw[key], f"is not a retry policy field ({known})")
    kwargs: dict[str, Any] = {}
    if "max_attempts" in raw:
        with _within("max_attempts"):
            kwargs["max_attempts"] = _converter.structure(raw["max_attempts"], int)
    if "retry_on" in raw:
        with _within("retry_on"):
            items = _list(raw["retry_on"], "of call outcomes")
        outcomes = []
        for index, item in enumerate(items):
            with _within(f"retry_on[{index}]"):
                outcomes.append(_converter.structure(item, CallOutcome))
        kwargs["retry_on"] = frozenset(outcomes)
    if "backoff" in raw:
        with _within("backoff"):
            kwargs["backoff"] = _converter.structure(raw["backoff"], _BACKOFF_TYPE)
    if "outcome_backoff" in raw:
        with _within("outcome_backoff"):
            per_outcome = _mapping(raw["outcome_backoff"], "outcome -> backoff")
        backoffs: dict[CallOutcome, Backoff] = {}
        for key, value in per_outcome.items():
            with _within(f"outcome_backoff.{key}"):
                outcome = _converter.structure(key, CallOutcome)
                backoffs[outcome] = _converter.structure(value, _BACKOFF_TYPE)
        kwargs["outcome_backoff"] = backoffs
    if "caps" in raw:
        with _within("caps"):
            items = _list(raw["caps"], "of attempt caps")
        caps = []
        for index, item in enumerate(items):
            with _within(f"caps[{index}]"):
                caps.append(_converter.structure(item, _CAP_TYPE))
        kwargs["caps"] = tuple(caps)
    if "honour_retry_after" in raw:
        with _within("honour_retry_after"):
            kwargs["honour_retry_after"] = _converter.structure(raw["honour_retry_after"], bool)
    with _within(""):
        return RetryPolicy(**kwargs)


def _unstructure_tagged(value: object, tags: Mapping[type, str], field: str) -> dict[str, Any]:
    tag = tags.get(type(value))
    if tag is None:
        known = ", ".join(cls.__name__ for cls in tags)
        raise InvalidRetryPolicy(field, value, f"has no JSON form (only {known} do)")
    body: dict[str, Any] = _converter.unstructure(value, type(value))
    return {"type": tag, **body}


def _unstructure_backoff(value: Backoff) -> dict[str, Any]:
    return _unstructure_tagged(value, _BACKOFF_TAGS, "backoff")


def _unstructure_cap(value: AttemptCap) -> dict[str, Any]:
    return _unstructure_tagged(value, _CAP_TAGS, "caps")


def _unstructure_outcome_backoff(value: Mapping[CallOutcome, Backoff]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for outcome in sorted(value):
        with _within(f"outcome_backoff.{outcome.value}"):
            result[outcome.value] = _unstructure_tagged(value[outcome], _BACKOFF_TAGS, "")
    return result


def _unstructure_caps(value: tuple[AttemptCap, ...]) -> list[dict[str, Any]]:
    result = []
    for index, cap in enumerate(value):
        with _within(f"caps[{index}]"):
            result.append(_unstructure_tagged(cap, _CAP_TAGS, ""))
    return result


def _configure(converter: cattrs.Converter) -> None:
    converter.register_unstructure_hook(timedelta, _seconds_out)
    converter.register_unstructure_hook(Jitter, lambda j: j.value)
    converter.register_unstructure_hook(
        Fixed, make_dict_unstructure_fn(Fixed, converter, interval=override(rename="seconds"))
    )
    for cls in (Exponential, DecorrelatedJitter):
        converter.register_unstructure_hook(
            cls,
            make_dict_unstructure_fn(
                cls,
                converter,
                base=override(rename="base_seconds"),
                cap=override(rename="cap_seconds"),
            ),
        )
    converter.register_unstructure_hook(
        RollingCap,
        make_dict_unstructure_fn(RollingCap, converter, window=override(rename="window_seconds")),
    )
    converter.register_unstructure_hook(DailyCap, make_dict_unstructure_fn(DailyCap, converter))
    converter.register_unstructure_hook(
        RetryPolicy,
        make_dict_unstructure_fn(
            RetryPolicy,
            converter,
            retry_on=override(unstruct_hook=lambda s: sorted(o.value for o in s)),
            backoff=override(unstruct_hook=_unstructure_backoff),
            outcome_backoff=override(unstruct_hook=_unstructure_outcome_backoff),
            caps=override(unstruct_hook=_unstructure_caps),
        ),
    )
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(timedelta, _structure_seconds)
    converter.register_structure_hook(CallOutcome, _structure_outcome)
    converter.register_structure_hook(Jitter, _structure_jitter)
    converter.register_structure_hook(Backoff, _structure_backoff)
    converter.register_structure_hook(AttemptCap, _structure_cap)
    converter.register_structure_hook(RetryPolicy, _structure_policy)


_configure(_converter)

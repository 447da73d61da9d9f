"""A seeded call provider that models how real calls end.

:class:`SimulatedProvider` implements :class:`~outdial.ports.CallProvider`
and :class:`~outdial.ports.EventSource`; :meth:`SimulatedProvider.as_async`
gives an :class:`~outdial.ports.AsyncCallProvider` over the same state. It
reads the time from the clock it is given (a
:class:`~outdial.simulation.VirtualClock` in simulations) and produces the
events a real provider's webhooks would carry.

What happens to a call is set by a :class:`SimulationProfile`:

* **Outcome mix.** ``answer_rate``, ``voicemail_rate``, ``busy_rate``,
  ``failed_rate`` (the call ends with outcome ``error``), ``declined_rate``,
  ``opted_out_rate`` and ``invalid_number_rate`` must add up to at most 1;
  **the remainder is no_answer** (:attr:`SimulationProfile.no_answer_rate`).
* **Sticky numbers.** ``invalid_number_rate`` is drawn once per number: an
  invalid number is invalid on every attempt. ``reachability`` is the share of
  the valid numbers that can be reached at all; the others never pick up and
  end every attempt ``no_answer``. The other rates apply per attempt to the
  reachable numbers, so with ``reachability=1`` first attempts end with exactly
  the configured mix (in expectation).
* **Timing.** Each outcome draws from its own :class:`Distribution` of seconds:
  ``ring_seconds`` until a person picks up (answered, declined, opted out),
  ``voicemail_after_seconds`` until voicemail picks up, ``no_answer_seconds``
  of ringing before giving up, ``fail_seconds`` for busy / invalid / error,
  then ``talk_seconds`` (answered, opted out) or ``voicemail_seconds``.
  ``duration_seconds`` of the final event is that talk time, 0 for the rest.
* **Provider faults.** ``provider_error_rate`` makes ``place_call`` raise
  :class:`~outdial.errors.ProviderUnavailable` with ``placed=False`` (no call
  exists); ``unknown_fate_rate`` makes it raise ``ProviderUnavailable`` with
  ``placed=None``, as after a timeout: with probability
  ``unknown_fate_placed_rate`` the call was placed anyway, runs its course and
  sends its events, and ``fetch_call`` reports it; otherwise it does not exist
  and ``fetch_call`` returns ``None``.
* **Delivery.** With ``progress_events`` a call sends ``ringing`` (and
  ``in_progress`` when picked up) before ``ended``; sequences number the events
  of one call 0, 1, 2... in the order they happened. ``duplicate_rate`` delivers
  the final event a second time (same ``event_id``) and ``reorder_rate``
  delivers the last progress event after the final one, both
  ``late_delivery_seconds`` after the end.

Everything is deterministic: the outcome and timings of a call depend only on
``(seed, number, attempt_number)`` (hashed with BLAKE2b, never Python's
``hash()``), so the same seed gives the same run in any process, and a number
keeps its fate whatever order the calls are placed in. Provider faults depend
on ``(seed, number, attempt_number, n)`` where ``n`` counts the tries of that
attempt, so a retried ``place_call`` can succeed.

The simulator also keeps score: :attr:`~SimulatedProvider.calls_placed`,
:attr:`~SimulatedProvider.max_concurrent` (calls in progress, observed at
each ``place_call``), :attr:`~SimulatedProvider.overlapping_calls` (calls
placed to a number that already had one in progress: a double dial) and a
compact :meth:`~SimulatedProvider.call_log`.
"""

from __future__ import annotations

import itertools
import math
import struct
import threading
from bisect import bisect_right
from collections.abc import Callable
from datetime import datetime, timedelta
from hashlib import blake2b
from heapq import heapify, heappop, heappush
from typing import Any, Final, Protocol, runtime_checkable

import attrs

from outdial._async_face import AsyncFace
from outdial._attrs import copier
from outdial._time import UTC as _UTC
from outdial._time import require_aware
from outdial.errors import ConfigurationError, ProviderRejected, ProviderUnavailable
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, CallStatus, Clock, DialRequest, PlacedCall
from outdial.retry import RandomSource

__all__ = [
    "AsyncSimulatedProvider",
    "Constant",
    "Distribution",
    "LogNormal",
    "SimulatedCall",
    "SimulatedProvider",
    "SimulationProfile",
    "Uniform",
]


# -- distributions of seconds ----------------------------------------------------------


@runtime_checkable
class Distribution(Protocol):
    """A distribution of non-negative durations in seconds.

    ``sample`` must draw only from ``rng`` (anything with ``random()`` in
    ``[0, 1)``, e.g. ``random.Random(seed)``), so samples are reproducible.
    """

    def sample(self, rng: RandomSource) -> float: ...


def _number(where: str, value: object, *, positive: bool = False, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(where, value, "must be a number of seconds")
    if not math.isfinite(value) and not (allow_inf and value == math.inf):
        raise ConfigurationError(where, value, "must be finite")
    if value < 0 or (positive and value == 0):
        raise ConfigurationError(where, value, "must be positive" if positive else "must be >= 0")
    return float(value)


@attrs.frozen
class Constant:
    """Always ``value`` seconds."""

    value: float

    def __attrs_post_init__(self) -> None:
        _number("Constant.value", self.value)

    def sample(self, rng: RandomSource) -> float:
        return self.value


@attrs.frozen
class Uniform:
    """Uniformly between ``low`` and ``high`` seconds."""

    low: float
    high: float

    def __attrs_post_init__(self) -> None:
        _number("Uniform.low", self.low)
        _number("Uniform.high", self.high)
        if self.high < self.low:
            raise ConfigurationError("Uniform.high", self.high, f"is below low ({self.low})")

    def sample(self, rng: RandomSource) -> float:
        return self.low + (self.high - self.low) * rng.random()


@attrs.frozen
class LogNormal:
    """Log-normal seconds with the given ``median`` and shape ``sigma``, clipped
    to ``[low, high]``. Talk times and ring times look like this: most short,
    a long tail."""

    median: float
    sigma: float
    low: float = 0.0
    high: float = math.inf

    def __attrs_post_init__(self) -> None:
        _number("LogNormal.median", self.median, positive=True)
        _number("LogNormal.sigma", self.sigma)
        _number("LogNormal.low", self.low)
        _number("LogNormal.high", self.high, allow_inf=True)
        if self.high < self.low:
            raise ConfigurationError("LogNormal.high", self.high, f"is below low ({self.low})")

    def sample(self, rng: RandomSource) -> float:
        # Box-Muller from two uniforms: only rng.random() is needed.
        u1 = 1.0 - rng.random()  # (0, 1]
        z = math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * rng.random())
        value = self.median * math.exp(self.sigma * z)
        # min(max(value, low), high), without the two builtin calls
        low, high = self.low, self.high
        value = low if value < low else value
        return high if value > high else value


_TWO_PI: Final = 2.0 * math.pi


# -- the profile --------------------------------------------------------------------------


def _rate(instance: object, attribute: attrs.Attribute[float], value: object) -> None:
    where = f"SimulationProfile.{attribute.name}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(where, value, "must be a number between 0 and 1")
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ConfigurationError(where, value, "must be between 0 and 1")


def _distribution(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Distribution):
        raise ConfigurationError(
            f"SimulationProfile.{attribute.name}",
            value,
            "must be a distribution of seconds (Constant, Uniform, LogNormal...)",
        )


def _flag(instance: object, attribute: attrs.Attribute[bool], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"SimulationProfile.{attribute.name}", value, "must be True or False"
        )


_OUTCOME_RATES: Final = (
    ("answer_rate", CallOutcome.ANSWERED),
    ("voicemail_rate", CallOutcome.VOICEMAIL),
    ("busy_rate", CallOutcome.BUSY),
    ("failed_rate", CallOutcome.ERROR),
    ("declined_rate", CallOutcome.DECLINED),
    ("opted_out_rate", CallOutcome.OPTED_OUT),
    ("invalid_number_rate", CallOutcome.INVALID_NUMBER),
)
_RATE_SLACK: Final = 1e-9


@attrs.frozen
class SimulationProfile:
    """How simulated calls behave. Rates are probabilities in ``[0, 1]``.

    The outcome rates (``answer_rate`` ... ``invalid_number_rate``) must add
    up to at most 1; the remainder ends ``no_answer``. Only final events are
    sent unless ``progress_events`` is on (``reorder_rate`` needs it). See the
    module docstring for how stickiness, timing, faults and delivery knobs
    work. Bad values raise :class:`~outdial.errors.ConfigurationError` naming
    the field.
    """

    answer_rate: float = attrs.field(default=0.35, validator=_rate)
    voicemail_rate: float = attrs.field(default=0.15, validator=_rate)
    busy_rate: float = attrs.field(default=0.05, validator=_rate)
    failed_rate: float = attrs.field(default=0.02, validator=_rate)
    declined_rate: float = attrs.field(default=0.0, validator=_rate)
    opted_out_rate: float = attrs.field(default=0.0, validator=_rate)
    invalid_number_rate: float = attrs.field(default=0.02, validator=_rate)
    reachability: float = attrs.field(default=1.0, validator=_rate)

    ring_seconds: Distribution = attrs.field(
        default=LogNormal(median=8.0, sigma=0.5, low=2.0, high=30.0), validator=_distribution
    )
    voicemail_after_seconds: Distribution = attrs.field(
        default=Uniform(18.0, 30.0), validator=_distribution
    )
    no_answer_seconds: Distribution = attrs.field(
        default=Uniform(25.0, 35.0), validator=_distribution
    )
    fail_seconds: Distribution = attrs.field(default=Uniform(1.0, 4.0), validator=_distribution)
    talk_seconds: Distribution = attrs.field(
        default=LogNormal(median=75.0, sigma=0.8, low=5.0, high=1800.0), validator=_distribution
    )
    voicemail_seconds: Distribution = attrs.field(
        default=Uniform(10.0, 40.0), validator=_distribution
    )
    ringing_after_seconds: Distribution = attrs.field(
        default=Constant(1.0), validator=_distribution
    )

    progress_events: bool = attrs.field(default=False, validator=_flag)
    provider_error_rate: float = attrs.field(default=0.0, validator=_rate)
    unknown_fate_rate: float = attrs.field(default=0.0, validator=_rate)
    unknown_fate_placed_rate: float = attrs.field(default=0.5, validator=_rate)
    duplicate_rate: float = attrs.field(default=0.0, validator=_rate)
    reorder_rate: float = attrs.field(default=0.0, validator=_rate)
    late_delivery_seconds: Distribution = attrs.field(
        default=Uniform(1.0, 30.0), validator=_distribution
    )

    def __attrs_post_init__(self) -> None:
        total = sum(getattr(self, name) for name, _ in _OUTCOME_RATES)
        if total > 1.0 + _RATE_SLACK:
            parts = " + ".join(f"{name} {getattr(self, name)}" for name, _ in _OUTCOME_RATES)
            raise ConfigurationError(
                "SimulationProfile", round(total, 9), f"outcome rates add up to over 1 ({parts})"
            )
        faults = self.provider_error_rate + self.unknown_fate_rate
        if faults > 1.0 + _RATE_SLACK:
            raise ConfigurationError(
                "SimulationProfile.unknown_fate_rate",
                self.unknown_fate_rate,
                f"plus provider_error_rate ({self.provider_error_rate}) is over 1",
            )
        if self.reorder_rate > 0 and not self.progress_events:
            raise ConfigurationError(
                "SimulationProfile.reorder_rate",
                self.reorder_rate,
                "needs progress_events=True (only progress events can arrive out of order)",
            )

    @property
    def no_answer_rate(self) -> float:
        """The share of attempts that end ``no_answer`` (what the other outcome
        rates leave), for a reachable number."""
        taken = sum(float(getattr(self, name)) for name, _ in _OUTCOME_RATES)
        return max(0.0, 1.0 - taken)


# -- the call log ---------------------------------------------------------------------------


@attrs.frozen
class SimulatedCall:
    """One call the simulator placed, as it really went (whatever was delivered)."""

    attempt_id: str
    external_call_id: str
    number: str
    attempt_number: int
    placed_at: datetime
    ended_at: datetime
    outcome: CallOutcome
    duration_seconds: float
    answered_at: datetime | None = None
    cancelled: bool = False
    unknown_fate: bool = False


# -- internals ---------------------------------------------------------------------------------

_U53: Final = 2.0**-53
_UNPACK8: Final = struct.Struct("<8Q").unpack
_UNPACK2: Final = struct.Struct("<2Q").unpack


class _HashStream:
    """Uniform floats in [0, 1) from BLAKE2b in counter mode: stable across
    processes and platforms, and ~10x cheaper to create than seeding a
    ``random.Random`` (which matters at 100,000 calls).

    The stream of ``seeded``'s input followed by ``key``: ``seeded`` is a 64-byte
    BLAKE2b hasher already fed the part every stream of a provider starts with
    (its seed); it is copied, never updated (copying it is cheaper than hashing
    the whole key from scratch). Block 0 is the digest of that input, block
    ``n`` the digest of the input followed by ``#n``; each gives 8 draws.

    :meth:`restart` makes the same object the stream of another key: a provider
    keeps one stream for its calls and restarts it for each (under its lock),
    rather than creating and freeing an object per call."""

    __slots__ = ("_block", "_i", "_key", "_seeded", "_words")

    def __init__(self, seeded: blake2b, key: bytes) -> None:
        self._seeded = seeded
        self._words: tuple[int, ...] = ()
        self.restart(key)
        self._i = 0  # restart took the first draw: a new stream starts with it

    def restart(self, key: bytes) -> float:
        """Become the stream of ``key``, whatever was drawn before, and take its first
        draw: returns what :meth:`random` would (every call draws at least once, and
        this saves it a method call)."""
        self._key = key
        self._block = 0
        hasher = self._seeded.copy()
        hasher.update(key)
        words: tuple[int, ...] = _UNPACK8(hasher.digest())
        self._words = words
        self._i = 1
        return (words[0] >> 11) * _U53  # random()'s draw

    def random(self) -> float:
        i = self._i
        if i == 8:
            self._block += 1
            hasher = self._seeded.copy()
            hasher.update(self._key + b"#" + str(self._block).encode())
            self._words = _UNPACK8(hasher.digest())
            i = 0
        self._i = i + 1
        return (self._words[i] >> 11) * _U53


_INVALID: Final = CallOutcome.INVALID_NUMBER
_ERROR: Final = CallOutcome.ERROR
_FAILURE: Final = "simulated call failure"  # the error of a call that ends ``error``
_RINGING: Final = 0
_IN_PROGRESS: Final = 1
_ENDED: Final = 2
_US: Final = timedelta(microseconds=1)
_RAW_STATUS: Final = {outcome: outcome.value for outcome in CallOutcome}
# an event's id is its call's external id, ":" and its sequence (0 to 2: ringing,
# in_progress, ended)
_SEQUENCE: Final = (":0", ":1", ":2")
# copies of the provider's template values with what differs per call (no __init__)
_placed_call = copier(PlacedCall, "external_call_id")
_final_event = copier(
    CallEvent,
    "external_call_id",
    "attempt_id",
    "outcome",
    "retryable",
    "sequence",
    "occurred_at",
    "duration_seconds",
    "raw_status",
    "error",
    "event_id",
)


class _Calls:
    """Mutable bookkeeping for every call (internal; the log exposes frozen copies),
    one list per field and one position per call (its index, in placement order).

    Columns instead of one object per call: the lists hold only ints, floats,
    strings, ``None`` and outcome members, so the calls add no object for the
    garbage collector to track and walk, however many a simulation places.
    Instants are integer microseconds since the provider's base instant: cheap
    to compute and compare, and exact (no float rounding between the time an
    event is due and the ``occurred_at`` it reports).

    What only a cancel or an unknown-fate placement changes is kept as the set of
    the calls it happened to, not as a column: a call is ``retryable`` ``False``
    with error ``"cancelled"`` and generation 1 once cancelled (a call is
    cancelled at most once: a cancel ends it), else ``retryable`` ``None``,
    generation 0 and error ``"simulated call failure"`` when it ends ``error``.
    """

    __slots__ = (
        "answered",
        "attempt_id",
        "attempt_number",
        "cancelled",
        "duration",
        "ended",
        "external_id",
        "number",
        "outcome",
        "placed",
        "ringing",
        "unknown_fate",
    )

    def __init__(self) -> None:
        self.attempt_id: list[str] = []
        self.external_id: list[str] = []
        self.number: list[str] = []
        self.attempt_number: list[int] = []
        self.placed: list[int] = []
        self.ringing: list[int | None] = []
        self.answered: list[int | None] = []
        self.ended: list[int] = []
        self.outcome: list[CallOutcome] = []
        self.duration: list[float] = []
        self.cancelled: set[int] = set()  # indexes of the calls a cancel ended
        self.unknown_fate: set[int] = set()  # placed despite an unknown-fate error

    def __len__(self) -> int:
        return len(self.ended)

    def gen(self, index: int) -> int:
        """The generation of a call's scheduled end: 1 once a cancel superseded it."""
        return int(index in self.cancelled)


# (deliver at, tie, kind, call index, gen); instants in microseconds since the base. Only
# ints, so the garbage collector stops tracking an entry as soon as it first sees it
# (a heap entry lives as long as its call: tracked ones were promoted and re-scanned).
_Entry = tuple[int, int, int, int, int]

# What an outcome does: (rings, ring distribution name, talk distribution name). A call
# picks up (a person or voicemail answers) exactly when talk time follows.
_SHAPES: Final[dict[CallOutcome, tuple[bool, str, str | None]]] = {
    CallOutcome.ANSWERED: (True, "ring_seconds", "talk_seconds"),
    CallOutcome.OPTED_OUT: (True, "ring_seconds", "talk_seconds"),
    CallOutcome.VOICEMAIL: (True, "voicemail_after_seconds", "voicemail_seconds"),
    CallOutcome.DECLINED: (True, "ring_seconds", None),
    CallOutcome.NO_ANSWER: (True, "no_answer_seconds", None),
    CallOutcome.BUSY: (False, "fail_seconds", None),
    CallOutcome.INVALID_NUMBER: (False, "fail_seconds", None),
    CallOutcome.ERROR: (False, "fail_seconds", None),
}

_Sampler = Callable[[RandomSource], float]


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


class SimulatedProvider:
    """A deterministic, seeded :class:`~outdial.ports.CallProvider` and
    :class:`~outdial.ports.EventSource` (see the module docstring).

    ``clock`` is anything with ``now()``; calls start at ``clock.now()`` when
    placed, and ``due_events(now)`` hands out, in time order, every event due
    by ``now``. ``seed`` (int or str) picks the run. Thread-safe.
    """

    def __init__(
        self,
        clock: Clock,
        profile: SimulationProfile | None = None,
        *,
        seed: int | str = 0,
        name: str = "simulated",
    ) -> None:
        self.name = name
        self.profile = profile if profile is not None else SimulationProfile()
        self.seed = seed
        self._clock = clock
        self._base = require_aware(clock.now(), "clock.now()")
        self._lock = threading.Lock()
        # hashers fed the seed, copied for each stream (see _HashStream, _number_fate)
        prefix = f"{seed}:".encode()
        self._seeded = blake2b(prefix, digest_size=64)
        self._seeded_numbers = blake2b(prefix + b"n:", digest_size=16)
        self._stream = _HashStream(self._seeded, b"")  # restarted for each call, see _start

        p = self.profile
        # Per-attempt mix for reachable, valid numbers: renormalised without the
        # (per-number) invalid share; past the last threshold is no_answer.
        valid_share = 1.0 - p.invalid_number_rate
        per_attempt = [(getattr(p, n), o) for n, o in _OUTCOME_RATES if o is not _INVALID]
        self._mix_outcomes: tuple[CallOutcome, ...] = (
            *(o for _, o in per_attempt),
            CallOutcome.NO_ANSWER,
        )
        cumulative: list[float] = []
        acc = 0.0
        for rate, _ in per_attempt:
            acc += rate / valid_share if valid_share > 0 else 0.0
            cumulative.append(acc)
        self._mix_thresholds = cumulative
        self._number_level = p.invalid_number_rate > 0 or p.reachability < 1
        self._faults = p.provider_error_rate + p.unknown_fate_rate > 0
        # the profile's delivery knobs, read per call (the profile is frozen)
        self._progress = p.progress_events
        self._duplicates = p.duplicate_rate > 0
        self._reorders = p.reorder_rate > 0
        self._final_only = not (self._progress or self._duplicates)  # one event per call
        self._ringing_after: _Sampler = p.ringing_after_seconds.sample
        # a Constant delay (the default) draws nothing: its microseconds, once
        after = p.ringing_after_seconds
        self._ringing_after_us = _micros(after.value) if type(after) is Constant else None
        self._shapes: dict[CallOutcome, tuple[bool, _Sampler, _Sampler | None]] = {
            outcome: (rings, getattr(p, ring).sample, getattr(p, talk).sample if talk else None)
            for outcome, (rings, ring, talk) in _SHAPES.items()
        }

        self._last_offset: tuple[datetime, int] = (self._base, 0)  # see _offset
        self._last_instant: tuple[int, datetime] = (0, self._base + _US * 0)  # see _instant
        # values every call shares, copied with only what differs (cheaper than __init__)
        self._placed = PlacedCall(name, "", CallStatus.QUEUED)
        self._ended = CallEvent(provider=name, status=CallStatus.ENDED)
        self._events: list[_Entry] = []
        # when the calls in progress really end (a heap of instants; equal instants are
        # interchangeable): the in-flight count, see _settle
        self._ends: list[int] = []
        self._ticket = itertools.count()  # ties broken in scheduling order
        self._calls = _Calls()
        self._by_attempt: dict[str, int] = {}  # attempt id -> call index, see _attempt_index
        self._attempts_indexed = 0  # how many calls _by_attempt covers
        self._by_number: dict[str, list[int]] = {}  # number -> call indices, see _calls_to
        self._numbers_indexed = 0  # how many calls _by_number covers
        self._tries: dict[bytes, int] = {}
        self._number_fates: dict[str, CallOutcome | None] = {}  # see _number_fate
        self._last_end: dict[str, int] = {}  # number -> when its last call ends: overlaps
        self._in_flight = 0

        #: calls that exist (accepted, or placed despite an unknown-fate error)
        self.calls_placed = 0
        #: calls ended by ``cancel_call``
        self.calls_cancelled = 0
        #: ``place_call`` invocations that raised a simulated provider error
        self.errors_raised = 0
        #: the most calls in progress at once, observed at each ``place_call``
        self.max_concurrent = 0
        #: calls placed to a number that already had a call in progress
        self.overlapping_calls = 0

    def __repr__(self) -> str:
        return (
            f"SimulatedProvider(name={self.name!r}, seed={self.seed!r}, "
            f"calls_placed={self.calls_placed})"
        )

    # -- CallProvider ------------------------------------------------------------------------

    def place_call(self, request: DialRequest) -> PlacedCall:
        """Accept the call (status ``queued``) and schedule its events, or raise
        a simulated :class:`~outdial.errors.ProviderUnavailable`."""
        t = self._clock.now()
        last = self._last_offset  # _offset's hit, inline: the clock is usually at the instant
        now = last[1] if last[0] is t else self._offset(t)  # next_event_at last made
        key = f"{request.to}:{request.attempt_number}".encode()
        # acquire and release rather than ``with``: a with statement looks up and binds
        # the lock's __enter__ and __exit__ on every use, which costs as much as the
        # locking itself, and this method, next_event_at, due_events and the virtual
        # clock's advance_to each run once per simulated call
        lock = self._lock
        lock.acquire()
        try:
            if self._faults:
                self._maybe_fail(request, key, now)
            index = self._start(request, key, now)
        finally:
            lock.release()
        return _placed_call(self._placed, self._calls.external_id[index])

    def cancel_call(self, external_call_id: str) -> None:
        """End a call in progress now, with outcome ``error`` (not retryable,
        ``error="cancelled"``, duration the talk time so far); its undelivered
        events that had not happened yet are replaced by that final event. A
        call that already ended is left alone. An unknown id raises
        :class:`~outdial.errors.ProviderRejected` (code ``not_found``)."""
        now = self._offset(self._clock.now())
        with self._lock:
            i = self._index_of(external_call_id)
            if i is None:
                raise ProviderRejected(
                    f"no call {external_call_id!r}", provider=self.name, code="not_found"
                )
            calls = self._calls
            scheduled = calls.ended[i]
            if scheduled <= now:
                return
            calls.cancelled.add(i)  # retryable False, error "cancelled", generation 1
            calls.outcome[i] = CallOutcome.ERROR
            ringing = calls.ringing[i]
            if ringing is not None and ringing > now:
                calls.ringing[i] = None
            answered = calls.answered[i]
            if answered is not None and answered > now:
                calls.answered[i] = answered = None
            calls.duration[i] = (now - answered) / 1e6 if answered is not None else 0.0
            calls.ended[i] = now
            heappush(self._events, (now, next(self._ticket), _ENDED, i, 1))
            # it ends now instead of when it was scheduled to (its scheduled end is in the
            # in-flight heap unless a clock that went backwards already settled it)
            ends = self._ends
            if scheduled in ends:
                ends.remove(scheduled)  # any entry of that instant: they are interchangeable
                ends.append(now)
                heapify(ends)
            # its number's last end: the latest of its calls' ends, this one's now included
            number = calls.number[i]
            ended = calls.ended
            self._last_end[number] = max(ended[j] for j in self._calls_to(number))
            self.calls_cancelled += 1

    def fetch_call(self, *, attempt_id: str, external_call_id: str | None) -> CallEvent | None:
        """The truth about a call at ``clock.now()``: its final event once it
        ended, else a ``ringing`` / ``in_progress`` / ``queued`` view; ``None``
        when no such call was ever placed (e.g. an unknown-fate error that did
        not place it). Looks the call up by ``external_call_id`` when given,
        else by ``attempt_id``."""
        now = self._offset(self._clock.now())
        with self._lock:
            i = None
            if external_call_id is not None:
                i = self._index_of(external_call_id)
            if i is None:
                i = self._attempt_index(attempt_id)
            if i is None:
                return None
            calls = self._calls
            if calls.ended[i] <= now:
                return self._event(i, _ENDED)
            answered, ringing = calls.answered[i], calls.ringing[i]
            if answered is not None and answered <= now:
                return self._event(i, _IN_PROGRESS)
            if ringing is not None and ringing <= now:
                return self._event(i, _RINGING)
            return CallEvent(
                provider=self.name,
                status=CallStatus.QUEUED,
                external_call_id=calls.external_id[i],
                attempt_id=calls.attempt_id[i],
                occurred_at=self._instant(calls.placed[i]),
                raw_status="queued",
            )

    # -- EventSource ---------------------------------------------------------------------------

    def next_event_at(self) -> datetime | None:
        """When the earliest undelivered event is due (``None``: nothing pending)."""
        lock = self._lock
        lock.acquire()  # not ``with``: see place_call
        try:
            events = self._events
            if self._calls.cancelled:  # only a cancel makes entries stale
                while events and self._stale(events[0]):
                    heappop(events)
            return self._instant(events[0][0]) if events else None
        finally:
            lock.release()

    def due_events(self, now: datetime) -> list[CallEvent]:
        """Remove and return every event due by ``now``, in delivery order
        (by due time, then in the order they were scheduled)."""
        last = self._last_offset  # _offset's hit, inline (see place_call)
        if last[0] is now:
            limit = last[1]  # an instant _offset or _instant already measured: aware
        else:
            if now.tzinfo is not _UTC:
                require_aware(now, "SimulatedProvider.due_events")
            limit = self._offset(now)
        events = self._events
        out: list[CallEvent] = []
        lock = self._lock
        lock.acquire()  # not ``with``: see place_call
        try:
            if not events or events[0][0] > limit:
                return out  # nothing due
            event = self._event
            if self._calls.cancelled:  # only a cancel makes entries stale
                stale = self._stale
                while events and events[0][0] <= limit:
                    entry = heappop(events)
                    if not stale(entry):
                        out.append(event(entry[3], entry[2]))
            else:
                while True:  # the first entry is due (above)
                    entry = heappop(events)
                    out.append(event(entry[3], entry[2]))
                    if not events or events[0][0] > limit:
                        break
        finally:
            lock.release()
        return out

    # -- observations ---------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Calls placed and not yet ended at ``clock.now()``."""
        now = self._offset(self._clock.now())
        with self._lock:
            self._settle(now)
            return self._in_flight

    def call_log(self) -> list[SimulatedCall]:
        """Every call placed so far, in placement order, as it really went
        (a call still in progress shows when it will end)."""
        instant = self._instant
        with self._lock:
            c = self._calls
            return [
                SimulatedCall(
                    attempt_id=c.attempt_id[i],
                    external_call_id=c.external_id[i],
                    number=c.number[i],
                    attempt_number=c.attempt_number[i],
                    placed_at=instant(c.placed[i]),
                    ended_at=instant(c.ended[i]),
                    outcome=c.outcome[i],
                    duration_seconds=c.duration[i],
                    answered_at=None if answered is None else instant(answered),
                    cancelled=i in c.cancelled,
                    unknown_fate=i in c.unknown_fate,
                )
                for i, answered in enumerate(c.answered)
            ]

    def in_flight_at(self, t: datetime) -> int:
        """How many calls were in progress at instant ``t`` (placed at or
        before ``t``, ending after it), from the call log."""
        at = self._offset(require_aware(t, "SimulatedProvider.in_flight_at"))
        with self._lock:
            c = self._calls
            pairs = zip(c.placed, c.ended, strict=True)
            return sum(1 for placed, ended in pairs if placed <= at < ended)

    def as_async(self) -> AsyncSimulatedProvider:
        """An :class:`~outdial.ports.AsyncCallProvider` sharing this provider's state."""
        return AsyncSimulatedProvider(self)

    # -- internals ----------------------------------------------------------------------------

    def _index_of(self, external_call_id: str) -> int | None:
        """The index of the call with this external id (``SIM-`` and its 1-based
        placement number, as :meth:`_start` names it), None when there is none."""
        number = external_call_id[4:]
        if not (external_call_id.startswith("SIM-") and number.isdigit()):
            return None
        index = int(number) - 1
        ids = self._calls.external_id
        return index if 0 <= index < len(ids) and ids[index] == external_call_id else None

    def _attempt_index(self, attempt_id: str) -> int | None:
        """The index of the last call placed for ``attempt_id``, None when there is none.

        The look-up table is brought up to date here, from the attempt id column, rather
        than on every placement (only ``fetch_call`` by attempt id needs it): the calls
        placed since the last look-up are added in placement order, so a later call of
        the same attempt wins, exactly as if each placement had added itself."""
        by_attempt = self._by_attempt
        ids = self._calls.attempt_id
        placed = len(ids)
        for index in range(self._attempts_indexed, placed):
            by_attempt[ids[index]] = index
        self._attempts_indexed = placed
        return by_attempt.get(attempt_id)

    def _calls_to(self, number: str) -> list[int]:
        """The indices of every call placed to ``number``, in placement order.

        Like :meth:`_attempt_index`, the table is brought up to date here, from the
        number column, rather than on every placement (only a cancel needs it): a
        cancel costs the calls placed since the last one, not a scan of every call."""
        by_number = self._by_number
        numbers = self._calls.number
        placed = len(numbers)
        for index in range(self._numbers_indexed, placed):
            by_number.setdefault(numbers[index], []).append(index)
        self._numbers_indexed = placed
        return by_number.get(number, [])

    def _offset(self, t: datetime) -> int:
        """``t`` in microseconds since the base instant. The last pair asked for (or
        made by :meth:`_instant`) is kept: a step asks again for the same ``now``."""
        last = self._last_offset  # one tuple, so threads never see a torn pair
        if last[0] is t:
            return last[1]
        offset = (t - self._base) // _US
        self._last_offset = (t, offset)
        return offset

    def _instant(self, offset: int) -> datetime:
        """The instant ``offset`` microseconds after the base. The last one made is
        kept: the final event of a call is due at the instant ``next_event_at``
        announced, which the runner then hands back as ``now`` (so that instant is
        also remembered for :meth:`_offset`). Both are pure functions of ``offset``
        and ``t`` (the base never changes), so neither pair can go stale."""
        last = self._last_instant
        if last[0] == offset:
            return last[1]
        t = self._base + _US * offset
        self._last_instant = (offset, t)
        self._last_offset = (t, offset)
        return t

    def _maybe_fail(self, request: DialRequest, key: bytes, now: int) -> None:
        p = self.profile
        tries = self._tries.get(key, 0)
        self._tries[key] = tries + 1
        stream = _HashStream(self._seeded, b"fault:" + key + b":" + str(tries).encode())
        u = stream.random()
        if u < p.provider_error_rate:
            self.errors_raised += 1
            raise ProviderUnavailable(
                "simulated provider error", provider=self.name, status_code=503, placed=False
            )
        if u < p.provider_error_rate + p.unknown_fate_rate:
            self.errors_raised += 1
            if stream.random() < p.unknown_fate_placed_rate:
                self._calls.unknown_fate.add(self._start(request, key, now))
            raise ProviderUnavailable(
                "simulated timeout: the call may or may not have been placed",
                provider=self.name,
                code="timeout",
                placed=None,
            )

    def _number_fate(self, number: str) -> CallOutcome | None:
        """What every call to ``number`` ends with whatever the attempt (invalid, or
        never reached), or None when the per-attempt mix decides."""
        p = self.profile
        hasher = self._seeded_numbers.copy()  # BLAKE2b-128 of the seed, "n:" and the number
        hasher.update(number.encode())
        invalid_word, reach_word = _UNPACK2(hasher.digest())
        if (invalid_word >> 11) * _U53 < p.invalid_number_rate:
            return CallOutcome.INVALID_NUMBER
        if (reach_word >> 11) * _U53 >= p.reachability:
            return CallOutcome.NO_ANSWER
        return None

    def _start(self, request: DialRequest, key: bytes, now: int) -> int:
        """Place a call at ``now``: draw its fate, record it and schedule its events;
        returns its index."""
        number = request.to
        rng = self._stream  # only used under the lock, so one stream serves every call
        u = rng.restart(key)  # its first draw
        outcome: CallOutcome | None = None
        if self._number_level:
            fates = self._number_fates
            if number in fates:
                outcome = fates[number]
            else:
                outcome = fates[number] = self._number_fate(number)
        if outcome is None:
            outcome = self._mix_outcomes[bisect_right(self._mix_thresholds, u)]
        rings, ring_sample, talk_sample = self._shapes[outcome]
        ring = round(ring_sample(rng) * 1_000_000)  # _micros, inline
        answered: int | None
        if talk_sample is not None:  # it picks up, then talk (or a voicemail message)
            talk = talk_sample(rng)
            answered = now + ring
            ended = answered + round(talk * 1_000_000)
        else:
            talk = 0.0
            answered = None
            ended = now + ring

        if rings:
            after = self._ringing_after_us
            if after is None:
                after = round(self._ringing_after(rng) * 1_000_000)
            ringing: int | None = now + (ring if ring < after else after)  # min(after, ring)
        else:
            ringing = None

        self.calls_placed = placed = self.calls_placed + 1
        external_id = "SIM-" + str(placed).zfill(6)  # f"SIM-{placed:06d}", without a format spec
        # a new position in every column (see _Calls)
        calls = self._calls
        index = len(calls.ended)
        attempt_id = request.attempt_id
        calls.attempt_id.append(attempt_id)
        calls.external_id.append(external_id)
        calls.number.append(number)
        calls.attempt_number.append(request.attempt_number)
        calls.placed.append(now)
        calls.ringing.append(ringing)
        calls.answered.append(answered)
        calls.ended.append(ended)
        calls.outcome.append(outcome)
        calls.duration.append(talk)

        # in-flight bookkeeping (the truth, not what was delivered)
        ends = self._ends
        in_flight = self._in_flight
        while ends and ends[0] <= now:  # _settle(now), inline
            heappop(ends)
            in_flight -= 1
        self._in_flight = in_flight = in_flight + 1
        if in_flight > self.max_concurrent:  # noqa: PLR1730 - max() would cost a builtin call
            self.max_concurrent = in_flight
        heappush(ends, ended)
        last_end = self._last_end
        last = last_end.get(number)
        if last is not None and last > now:  # a call to that number is still in progress
            self.overlapping_calls += 1
            if ended > last:
                last_end[number] = ended
        else:
            last_end[number] = ended

        # delivery: drawn after the outcome and timings, so these knobs never
        # change what happens to a call, only how it is reported.
        events = self._events
        ticket = self._ticket
        if self._final_only:
            heappush(events, (ended, next(ticket), _ENDED, index, 0))
            return index
        p = self.profile
        again: int | None = None
        if self._duplicates and rng.random() < p.duplicate_rate:
            again = ended + _micros(p.late_delivery_seconds.sample(rng))
        if self._progress and ringing is not None:
            if self._reorders and rng.random() < p.reorder_rate:
                # the last progress event arrives after the final one
                late = ended + _micros(p.late_delivery_seconds.sample(rng))
                if answered is not None:
                    heappush(events, (ringing, next(ticket), _RINGING, index, 0))
                    heappush(events, (late, next(ticket), _IN_PROGRESS, index, 0))
                else:
                    heappush(events, (late, next(ticket), _RINGING, index, 0))
            else:
                heappush(events, (ringing, next(ticket), _RINGING, index, 0))
                if answered is not None:
                    heappush(events, (answered, next(ticket), _IN_PROGRESS, index, 0))
        heappush(events, (ended, next(ticket), _ENDED, index, 0))
        if again is not None:
            heappush(events, (again, next(ticket), _ENDED, index, 0))
        return index

    def _settle(self, now: int) -> None:
        """Count the calls that ended by ``now`` out of the in-flight count."""
        ends = self._ends
        ended = 0
        while ends and ends[0] <= now:
            heappop(ends)
            ended += 1
        self._in_flight -= ended

    def _stale(self, entry: _Entry) -> bool:
        """An entry a cancel made obsolete (its event no longer happens)."""
        kind, index = entry[2], entry[3]
        if kind == _ENDED:
            return entry[4] != self._calls.gen(index)
        if kind == _RINGING:
            return self._calls.ringing[index] is None
        return self._calls.answered[index] is None

    def _event(self, index: int, kind: int) -> CallEvent:
        calls = self._calls
        external_id = calls.external_id[index]
        if kind == _ENDED:
            outcome = calls.outcome[index]
            if self._progress:
                seq = (calls.ringing[index] is not None) + (calls.answered[index] is not None)
            else:
                seq = 0
            if index in calls.cancelled:
                retryable: bool | None = False
                error: str | None = "cancelled"
            else:
                retryable = None
                error = _FAILURE if outcome is _ERROR else None
            ended = calls.ended[index]
            last = self._last_instant  # _instant's hit, inline: next_event_at made it
            return _final_event(
                self._ended,
                external_id,
                calls.attempt_id[index],
                outcome,
                retryable,
                seq,
                last[1] if last[0] == ended else self._instant(ended),
                calls.duration[index],
                _RAW_STATUS[outcome],
                error,
                external_id + _SEQUENCE[seq],
            )
        progress = self._progress
        ringing = calls.ringing[index]
        if kind == _RINGING:
            at = ringing
            seq_or_none: int | None = 0 if progress else None
            status, raw = CallStatus.RINGING, "ringing"
        else:
            at = calls.answered[index]
            seq_or_none = int(ringing is not None) if progress else None
            status, raw = CallStatus.IN_PROGRESS, "in_progress"
        return CallEvent(
            provider=self.name,
            status=status,
            external_call_id=external_id,
            attempt_id=calls.attempt_id[index],
            sequence=seq_or_none,
            occurred_at=None if at is None else self._instant(at),
            raw_status=raw,
            event_id=None if seq_or_none is None else external_id + _SEQUENCE[seq_or_none],
        )


class AsyncSimulatedProvider(AsyncFace[SimulatedProvider]):
    """The :class:`~outdial.ports.AsyncCallProvider` face of a
    :class:`SimulatedProvider` (made by :meth:`SimulatedProvider.as_async`).

    It shares the provider's state, so events, the call log and the counters
    are the same whichever face is used. ``next_event_at`` / ``due_events``
    stay synchronous (the :class:`~outdial.ports.EventSource` protocol).
    """

"""Whole campaigns through each provider adapter, against its loopback server.

The dialer places every call with the real adapter over HTTP; the loopback fake
creates the calls as the provider would. The test then plays the provider's
side: for each call it sends the signed webhooks the provider sends (progress,
then the final status) through the framework-neutral
:func:`~outdial.providers.verify_and_parse` into ``dialer.submit`` or
``service.apply_event``, and it sends some of them late (after later calls have
ended), some twice (at once, and again minutes later when the recipient is
already on its next attempt), some out of order (the final status before the
progress event), and one forged. Time is a :class:`VirtualClock`, so retries a
minute apart take no wall time.

Each recipient follows a script of outcomes (answered; busy then answered;
no answer three times), so the end state is known exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import attrs
import httpx
import pytest

from invariants import all_attempts, all_recipients, check_campaign
from outdial import AgentSettings, AsyncDialer, CampaignService, CampaignStatus, Dialer, EventBus
from outdial.engine import Effect, Engine, EngineConfig
from outdial.errors import WebhookVerificationError
from outdial.outcomes import CallOutcome
from outdial.ports import CallEvent, WebhookRequest
from outdial.providers import FallbackProvider, TwilioProvider, VapiProvider, verify_and_parse
from outdial.recipient import AttemptStatus, RecipientStatus
from outdial.retry import Fixed, RetryPolicy
from outdial.simulation import VirtualClock, sample_numbers
from outdial.testing import InMemoryRepository

from .cases import CALLBACK, CASES, Case
from .servers import (
    FakeElevenLabs,
    FakeTwilio,
    FakeVapi,
    LoopbackServer,
    Recorded,
    Reply,
    refused_url,
)

UTC = timezone.utc
START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
WS = "w1"
CONCURRENCY = 3
RETRIES = RetryPolicy(max_attempts=3, backoff=Fixed(timedelta(minutes=1)))

#: What happens to each recipient's calls, attempt by attempt (recipient i gets SCRIPTS[i % 3]).
SCRIPTS: tuple[tuple[str, ...], ...] = (
    ("answered",),
    ("busy", "answered"),
    ("no_answer", "no_answer", "no_answer"),
)

# -- each provider's side of the wire --------------------------------------------------------


@attrs.frozen
class Kit:
    """How to play one provider: who was dialled, and its webhooks for a call."""

    case: Case
    numbers: Callable[[int], list[str]]
    secrets: Callable[[Any], dict[str, str]]
    calls: Callable[[Any], list[tuple[str, str]]]  # (call id, number), in creation order
    dialled: Callable[[Recorded], str | None]  # the number of a create-call request
    progress: Callable[[Any, str, str, datetime], WebhookRequest | None]
    final: Callable[[Any, str, str, datetime], WebhookRequest]
    forge: Callable[[WebhookRequest], WebhookRequest]

    @property
    def name(self) -> str:
        return self.case.name


def _case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def _us(n: int) -> list[str]:
    return sample_numbers(n, seed=7)


def _indian(n: int) -> list[str]:
    return [f"+9198765{i:05d}" for i in range(n)]


def _json_body_tampered(request: WebhookRequest) -> WebhookRequest:
    """The body changed in transit (still valid JSON): the signature no longer matches."""
    return attrs.evolve(request, body=request.body + b" ")


#: outcome -> (CallStatus, AnsweredBy, CallDuration)
_TWILIO_FINAL: dict[str, tuple[str, str | None, int | None]] = {
    "answered": ("completed", "human", 42),
    "busy": ("busy", None, None),
    "no_answer": ("no-answer", None, None),
}
_VAPI_REASON = {
    "answered": "customer-ended-call",
    "busy": "customer-busy",
    "no_answer": "customer-did-not-answer",
}
_RETELL_REASON = {"answered": "user_hangup", "busy": "dial_busy", "no_answer": "dial_no_answer"}
_EXOTEL_STATUS = {"answered": "completed", "busy": "busy", "no_answer": "no-answer"}
_KOLKATA = ZoneInfo("Asia/Kolkata")


def _twilio_final(s: FakeTwilio, sid: str, outcome: str, at: datetime) -> WebhookRequest:
    status, answered_by, duration = _TWILIO_FINAL[outcome]
    return s.status_callback(sid, status, answered_by=answered_by, duration=duration, at=at)


def _twilio_forged(request: WebhookRequest) -> WebhookRequest:
    """The status changed by someone without the Auth Token (the signature is kept)."""
    fields = parse_qsl(request.body.decode())
    forged = [
        (k, ("busy" if v == "completed" else "completed") if k == "CallStatus" else v)
        for k, v in fields
    ]
    return attrs.evolve(request, body=urlencode(forged).encode())


def _elevenlabs_final(s: FakeElevenLabs, conv: str, outcome: str, at: datetime) -> WebhookRequest:
    if outcome == "answered":
        return s.webhook(conv, "post_call_transcription", status="done", at=at)
    reason = {"busy": "busy", "no_answer": "no-answer"}[outcome]
    return s.webhook(conv, "call_initiation_failure", failure_reason=reason, at=at)


def _exotel_local(at: datetime) -> str:
    return at.astimezone(_KOLKATA).strftime("%Y-%m-%d %H:%M:%S")


KITS = [
    Kit(
        _case("twilio"),
        numbers=_us,
        secrets=lambda s: {"auth_token": s.auth_token},
        calls=lambda s: [(sid, c["to"]) for sid, c in s.calls.items()],
        dialled=lambda r: (
            r.form()["To"][0] if r.method == "POST" and r.path.endswith("/Calls.json") else None
        ),
        # Twilio reports ringing for every call it places
        progress=lambda s, sid, outcome, at: s.status_callback(sid, "ringing", at=at),
        final=_twilio_final,
        forge=_twilio_forged,
    ),
    Kit(
        _case("vapi"),
        numbers=_us,
        secrets=lambda s: {"hmac": s.hmac_secret},
        calls=lambda s: [(cid, c["customer"]["number"]) for cid, c in s.calls.items()],
        dialled=lambda r: (
            r.json()["customer"]["number"] if r.method == "POST" and r.path == "/call" else None
        ),
        progress=lambda s, cid, outcome, at: s.server_message(
            cid, "status-update", status="ringing", at=at
        ),
        final=lambda s, cid, outcome, at: s.server_message(
            cid, "end-of-call-report", ended_reason=_VAPI_REASON[outcome], at=at
        ),
        forge=_json_body_tampered,
    ),
    Kit(
        _case("retell"),
        numbers=_us,
        secrets=lambda s: {"api_key": s.api_key},
        calls=lambda s: [(cid, c["to_number"]) for cid, c in s.calls.items()],
        dialled=lambda r: r.json()["to_number"] if r.path == "/v2/create-phone-call" else None,
        # call_started only happens when somebody picks up
        progress=lambda s, cid, outcome, at: (
            s.webhook(cid, "call_started", at=at) if outcome == "answered" else None
        ),
        final=lambda s, cid, outcome, at: s.webhook(
            cid, "call_ended", disconnection_reason=_RETELL_REASON[outcome], at=at
        ),
        forge=_json_body_tampered,
    ),
    Kit(
        _case("elevenlabs"),
        numbers=_us,
        secrets=lambda s: {"secret": s.webhook_secret},
        calls=lambda s: [(cid, c["to_number"]) for cid, c in s.conversations.items()],
        dialled=lambda r: r.json()["to_number"] if r.path.endswith("/outbound-call") else None,
        # ElevenLabs sends no ringing event: its non-final post_call_audio message (answered
        # calls only) is the extra message, and it may well overtake the transcription
        progress=lambda s, cid, outcome, at: (
            s.webhook(cid, "post_call_audio", at=at) if outcome == "answered" else None
        ),
        final=_elevenlabs_final,
        forge=_json_body_tampered,
    ),
    Kit(
        _case("exotel"),
        numbers=_indian,
        secrets=lambda s: {"token": "cb-secret"},
        calls=lambda s: [(sid, c["From"]) for sid, c in s.calls.items()],
        dialled=lambda r: r.form()["From"][0] if r.path.endswith("/connect.json") else None,
        # Exotel's only progress callback is "answered"
        progress=lambda s, sid, outcome, at: (
            s.status_callback(
                sid, "in-progress", event_type="answered", date_updated=_exotel_local(at)
            )
            if outcome == "answered"
            else None
        ),
        final=lambda s, sid, outcome, at: s.status_callback(
            sid, _EXOTEL_STATUS[outcome], date_updated=_exotel_local(at)
        ),
        # Exotel signs nothing: the secret is the token in the callback URL
        forge=lambda r: attrs.evolve(r, url=r.url.replace("token=cb-secret", "token=guessed")),
    ),
]
KIT = {k.name: k for k in KITS}

# -- the provider's side, in virtual time -----------------------------------------------------


@attrs.define
class Delivery:
    at: datetime
    order: int
    call: str
    kind: str  # "progress" | "final"
    request: WebhookRequest
    forged: bool = False
    repeat: bool = False  # the same request was sent before


@attrs.define
class Call:
    id: str
    number: str
    created_at: datetime
    outcome: str
    late: bool = False  # its final status comes minutes after the others'
    final_delivered_at: datetime | None = None


class Runner:
    """A dialer seen through the two things the scenario needs (sync or asyncio)."""

    def __init__(self, dialer: Dialer | AsyncDialer, loop: asyncio.AbstractEventLoop | None):
        self.dialer = dialer
        self.loop = loop

    def _run(self, value: Any) -> Any:
        return value if self.loop is None else self.loop.run_until_complete(value)

    def tick(self) -> datetime | None:
        return self._run(self.dialer.tick())  # type: ignore[no-any-return]

    def submit(self, event: CallEvent) -> Any:
        return self._run(self.dialer.submit(event))


class ProviderSide:
    """Plays one provider for a campaign: sees the calls the adapter created on the
    loopback server, schedules their webhooks (late, twice, out of order, one forged)
    and delivers them through ``verify_and_parse``; keeps what a test asserts on."""

    def __init__(
        self,
        servers: dict[str, LoopbackServer],
        *,
        service: CampaignService,
        repo: Any,
        clock: VirtualClock,
        campaign_id: str,
        scripts: dict[str, tuple[str, ...]],
        via_service: bool = False,
    ) -> None:
        self.servers = servers  # provider name -> server (two with a fallback)
        self.service = service
        self.repo = repo
        self.clock = clock
        self.campaign_id = campaign_id
        self.scripts = scripts
        self.via_service = via_service
        self.calls: dict[str, Call] = {}
        self.kit_of: dict[str, Kit] = {}
        self.pending: list[Delivery] = []
        self.live: dict[str, str] = {}  # number -> call id, until its final status is sent
        self.max_live = 0
        self.seen = Counter[str]()
        self.placed_per_number = Counter[str]()
        self._orders = itertools.count()
        self._finals = 0
        self._progressed = 0

    # -- what the provider does --------------------------------------------------------------

    def harvest(self) -> None:
        """Schedule the webhooks of every call created since the last look."""
        now = self.clock.now()
        for name, server in self.servers.items():
            kit = KIT[name]
            # calls placed in one tick, in number order (the async dialer places them at once)
            new = sorted((n, c) for c, n in kit.calls(server) if c not in self.calls)
            for number, call_id in new:
                assert number not in self.live, f"{number} dialled while a call to it is live"
                self.placed_per_number[number] += 1
                outcome = self.scripts[number][self.placed_per_number[number] - 1]
                call = self.calls[call_id] = Call(call_id, number, now, outcome)
                self.kit_of[call_id] = kit
                self.live[number] = call_id
                self.max_live = max(self.max_live, len(self.live))
                self._schedule(kit, server, call)

    def _schedule(self, kit: Kit, server: LoopbackServer, call: Call) -> None:
        t0 = call.created_at
        k = self._finals
        self._finals += 1
        call.late = k % 4 == 2
        final_at = t0 + (timedelta(minutes=4) if call.late else timedelta(seconds=20))
        progress = kit.progress(server, call.id, call.outcome, t0 + timedelta(seconds=2))
        if progress is not None:
            p = self._progressed
            self._progressed += 1
            if p % 3 == 0:  # out of order: the final status overtakes the progress event
                self._add(final_at + timedelta(seconds=3), call, "progress", progress)
            else:
                self._add(t0 + timedelta(seconds=2), call, "progress", progress)
                if p % 3 == 1:
                    self._add(t0 + timedelta(seconds=3), call, "progress", progress, repeat=True)
        final = kit.final(server, call.id, call.outcome, final_at)
        if k == 0:
            self._add(final_at - timedelta(seconds=1), call, "final", kit.forge(final), forged=True)
        self._add(final_at, call, "final", final)
        if k % 4 == 1:  # delivered twice at once
            self._add(final_at + timedelta(seconds=1), call, "final", final, repeat=True)
        if k % 4 == 3:  # and again three minutes later (the recipient has moved on)
            self._add(final_at + timedelta(minutes=3), call, "final", final, repeat=True)

    def _add(self, at: datetime, call: Call, kind: str, request: WebhookRequest, **kw: Any) -> None:
        self.pending.append(Delivery(at, next(self._orders), call.id, kind, request, **kw))

    def next_at(self) -> datetime | None:
        return min((d.at for d in self.pending), default=None)

    # -- the web endpoint -------------------------------------------------------------------

    def deliver_due(self, runner: Runner) -> None:
        now = self.clock.now()
        due = sorted((d for d in self.pending if d.at <= now), key=lambda d: (d.at, d.order))
        for d in due:
            self.pending.remove(d)
            self._deliver(d, runner)

    def snapshot(self) -> Any:
        recipients = all_recipients(self.repo, self.campaign_id)
        return (
            self.service.get(WS, self.campaign_id),
            recipients,
            all_attempts(self.repo, recipients),
        )

    def _deliver(self, d: Delivery, runner: Runner) -> None:
        call = self.calls[d.call]
        kit = self.kit_of[d.call]
        after_final = call.final_delivered_at is not None
        changes_nothing = d.forged or d.repeat or after_final
        before = self.snapshot() if changes_nothing else None
        try:
            event = verify_and_parse(
                kit.name,
                d.request,
                now=self.clock.now(),
                **kit.secrets(self.servers[kit.name]),
            )
        except WebhookVerificationError:
            assert d.forged, f"a genuine {kit.name} webhook was refused"
            self.seen["forged refused"] += 1
        else:
            assert not d.forged, f"a forged {kit.name} webhook was accepted"
            result = self.service.apply_event(event) if self.via_service else runner.submit(event)
            assert result.effect is not None, f"no attempt matched {event}"
            if after_final:
                assert result.effect in (Effect.DUPLICATE, Effect.STALE), result
            if d.kind == "final" and not after_final:
                assert result.effect is Effect.APPLIED, result
                call.final_delivered_at = self.clock.now()
                del self.live[call.number]
            self._note(d, call, after_final)
        if before is not None:
            assert self.snapshot() == before, f"{d.kind} webhook {d} changed the campaign"

    def _note(self, d: Delivery, call: Call, after_final: bool) -> None:
        """Count which kind of bad delivery this was (the test checks each happened)."""
        if d.kind == "progress":
            if after_final:
                self.seen["progress after final"] += 1
            elif d.repeat:
                self.seen["progress twice"] += 1
        elif d.repeat:
            assert call.final_delivered_at is not None
            again = self.clock.now() - call.final_delivered_at > timedelta(minutes=1)
            self.seen["final again, minutes later" if again else "final twice"] += 1
        elif call.late and any(
            c.created_at > call.created_at and c.final_delivered_at is not None
            for c in self.calls.values()
        ):
            self.seen["final after later calls ended"] += 1

    # -- the whole run -----------------------------------------------------------------------

    def run(self, runner: Runner, *, idle_step: timedelta = timedelta(minutes=1)) -> None:
        """Alternate dialer ticks and webhook deliveries until nothing is left.

        With no webhook due and the dialer asleep, the clock moves by ``idle_step``
        while an attempt is still unsettled, so the dialer reconciles it."""
        wake = runner.tick()
        for _ in range(2000):
            self.harvest()
            times = [t for t in (self.next_at(), wake) if t is not None]
            if not times:
                if self.service.get(WS, self.campaign_id).campaign.counters.in_flight == 0:
                    return
                times = [self.clock.now() + idle_step]
            nxt = min(times)
            if nxt > self.clock.now():
                self.clock.advance_to(nxt)
            self.deliver_due(runner)
            wake = runner.tick()
        raise AssertionError("the campaign never went idle")


# -- building a campaign -------------------------------------------------------------------------


@attrs.define
class World:
    repo: Any
    clock: VirtualClock
    bus: EventBus
    service: CampaignService
    campaign_id: str
    scripts: dict[str, tuple[str, ...]]


def world(kit: Kit, repo: Any, n: int = 12, *, agent: AgentSettings | None = None) -> World:
    clock = VirtualClock(START)
    bus = EventBus()
    service = CampaignService(repo, clock=clock, events=bus)
    numbers = kit.numbers(n)
    campaign = service.create(
        WS,
        name=f"{kit.name} scenario",
        agent=agent or kit.case.agent,
        concurrency_limit=CONCURRENCY,
        retry_policy=RETRIES,
        recipients=[{"phone_number": p, "first_name": f"R{i}"} for i, p in enumerate(numbers)],
    )
    service.start(WS, campaign.id)
    scripts = {p: SCRIPTS[i % len(SCRIPTS)] for i, p in enumerate(numbers)}
    return World(repo, clock, bus, service, campaign.id, scripts)


def server_saw(kit: Kit, server: LoopbackServer) -> Counter[str]:
    """Create-call requests the provider received, per number dialled."""
    return Counter(n for n in (kit.dialled(r) for r in server.requests) if n is not None)


def check_outcome(w: World, side: ProviderSide, kit: Kit, server: LoopbackServer) -> None:
    campaign = check_campaign(w.repo, w.campaign_id, now=w.clock.now(), events=list(w.bus.history))
    assert campaign.status is CampaignStatus.COMPLETED
    expected = Counter(
        RecipientStatus.COMPLETED if script[-1] == "answered" else RecipientStatus.FAILED
        for script in w.scripts.values()
    )
    c = campaign.counters
    assert (c.completed, c.failed, c.skipped) == (
        expected[RecipientStatus.COMPLETED],
        expected[RecipientStatus.FAILED],
        0,
    )
    assert c.answered == expected[RecipientStatus.COMPLETED]
    assert c.attempts == sum(len(s) for s in w.scripts.values()) == len(side.calls)

    saw = server_saw(kit, server)
    recipients = all_recipients(w.repo, w.campaign_id)
    attempts = all_attempts(w.repo, recipients)
    for r in recipients:
        script = w.scripts[r.phone]
        assert r.attempts == len(attempts[r.id]) == saw[r.phone] == len(script), r.phone
        assert r.outcome == script[-1]
        for a in attempts[r.id]:
            assert a.status is AttemptStatus.ENDED and a.provider == kit.name
            assert side.calls[a.external_call_id].number == r.phone  # type: ignore[index]
        assert [a.outcome for a in attempts[r.id]] == [CallOutcome(o) for o in script]
    # the server's view: never two live calls to one number (checked as calls appeared),
    # never more than the campaign's concurrency, and the concurrency was used
    assert side.max_live == CONCURRENCY
    # every way of delivering a webhook badly happened at least once
    assert set(side.seen) >= {
        "forged refused",
        "final twice",
        "final again, minutes later",
        "final after later calls ended",
        "progress after final",
    }, side.seen


# -- the scenarios -----------------------------------------------------------------------------


@pytest.mark.parametrize("kit", KITS, ids=lambda k: k.name)
def test_campaign_through_the_adapter_applies_each_webhook_once(kit: Kit) -> None:
    repo = InMemoryRepository()
    with kit.case.fake() as server, kit.case.sync(server) as adapter:
        w = world(kit, repo)
        dialer = Dialer(repo, adapter, clock=w.clock, events=w.bus, rng=random.Random(1))
        side = ProviderSide(
            {kit.name: server},
            service=w.service,
            repo=repo,
            clock=w.clock,
            campaign_id=w.campaign_id,
            scripts=w.scripts,
            via_service=kit.name in ("retell", "exotel"),  # the service's entry point too
        )
        side.run(Runner(dialer, None))
        check_outcome(w, side, kit, server)


@pytest.mark.parametrize("name", ["vapi", "twilio"])
def test_async_dialer_with_the_async_adapter_on_sqlite(name: str, tmp_path: Any) -> None:
    sql = pytest.importorskip("outdial.sql")
    kit = KIT[name]
    repo = sql.connect(f"sqlite:///{tmp_path / 'scenario.sqlite'}", create=True)
    loop = asyncio.new_event_loop()
    try:
        with kit.case.fake() as server:
            adapter = kit.case.async_(server)
            w = world(kit, repo)
            dialer = AsyncDialer(repo, adapter, clock=w.clock, events=w.bus, rng=random.Random(1))
            side = ProviderSide(
                {kit.name: server},
                service=w.service,
                repo=repo,
                clock=w.clock,
                campaign_id=w.campaign_id,
                scripts=w.scripts,
            )
            try:
                side.run(Runner(dialer, loop))
            finally:
                loop.run_until_complete(adapter.aclose())
            check_outcome(w, side, kit, server)
    finally:
        loop.close()
        repo.close()


# -- fallback: a secondary only when the primary certainly did not place the call ---------------

FALLBACK_AGENT = AgentSettings(
    provider="vapi",
    external_agent_id="asst-1",
    phone_number_id="pn-1",
    fallback_provider="twilio",
    options={
        "fallback.phone_number": "+12125550199",
        "fallback.url": "https://app.example/twiml",
    },
)


@pytest.fixture
def pair() -> Iterator[tuple[FakeVapi, FakeTwilio]]:
    with FakeVapi() as vapi, FakeTwilio() as twilio:
        yield vapi, twilio


def fallback_world(
    vapi: FakeVapi, twilio: FakeTwilio, *, primary_url: str | None = None
) -> tuple[World, FallbackProvider, ProviderSide]:
    repo = InMemoryRepository()
    w = world(KIT["vapi"], repo, n=6, agent=FALLBACK_AGENT)
    provider = FallbackProvider(
        VapiProvider(vapi.api_key, base_url=primary_url or vapi.url, timeout=httpx.Timeout(0.3)),
        TwilioProvider(
            twilio.account_sid,
            twilio.auth_token,
            base_url=twilio.url,
            status_callback_url=f"{CALLBACK}/twilio",
        ),
    )
    side = ProviderSide(
        {"vapi": vapi, "twilio": twilio},
        service=w.service,
        repo=repo,
        clock=w.clock,
        campaign_id=w.campaign_id,
        scripts=w.scripts,
    )
    return w, provider, side


def _dialled(kit: Kit, server: LoopbackServer) -> list[str]:
    return [n for n in (kit.dialled(r) for r in server.requests) if n is not None]


@pytest.mark.parametrize(
    "refusal",
    [
        Reply(400, {"message": "Over Concurrency Limit.", "statusCode": 400}),
        Reply(429, {"message": "Too many requests"}, {"Retry-After": "5"}),
        Reply(401, {"message": "Invalid Key"}),
    ],
    ids=["concurrency-limit", "429", "401"],
)
def test_a_call_the_primary_certainly_did_not_place_is_placed_by_the_secondary(
    pair: tuple[FakeVapi, FakeTwilio], refusal: Reply
) -> None:
    vapi, twilio = pair
    vapi.inject(refusal)
    w, provider, side = fallback_world(vapi, twilio)
    with provider:
        dialer = Dialer(w.repo, provider, clock=w.clock, events=w.bus, rng=random.Random(1))
        side.run(Runner(dialer, None))
    first = sample_numbers(6, seed=7)[0]
    assert _dialled(KIT["twilio"], twilio) == [first]  # only the refused one went to Twilio
    assert Counter(_dialled(KIT["vapi"], vapi))[first] == 1  # the refusal, nothing more
    check_fallback_outcome(w, side)
    attempts = all_attempts(w.repo, all_recipients(w.repo, w.campaign_id))
    by_phone = {a.phone: a for lst in attempts.values() for a in lst if a.number == 1}
    assert by_phone[first].provider == "twilio"
    assert by_phone[first].external_call_id in twilio.calls


def test_a_refused_connection_to_the_primary_hands_every_call_to_the_secondary(
    pair: tuple[FakeVapi, FakeTwilio],
) -> None:
    vapi, twilio = pair
    w, provider, side = fallback_world(vapi, twilio, primary_url=refused_url())
    with provider:
        dialer = Dialer(w.repo, provider, clock=w.clock, events=w.bus, rng=random.Random(1))
        side.run(Runner(dialer, None))
    check_fallback_outcome(w, side)
    assert vapi.requests == []
    assert Counter(_dialled(KIT["twilio"], twilio)) == Counter(
        {p: len(s) for p, s in w.scripts.items()}
    )


def test_an_unknown_fate_never_falls_back_and_waits_for_the_providers_word(
    pair: tuple[FakeVapi, FakeTwilio],
) -> None:
    """Primary times out after creating the call, or answers 503 (placed=None): Twilio is
    never asked. The timed-out call's own webhooks (they carry the attempt id) settle it;
    the 503 one, which the provider never created, is given up after reconciliation and
    retried once it is safe."""
    vapi, twilio = pair
    vapi.inject(
        Reply(503, {"message": "Service Unavailable", "statusCode": 503}),
        Reply(through=True, delay=1.0),  # created, but the answer never comes in time
    )
    w, provider, side = fallback_world(vapi, twilio)
    engine = Engine(EngineConfig(give_up_unknown_after=timedelta(minutes=10)))
    numbers = sample_numbers(6, seed=7)
    with provider:
        dialer = Dialer(
            w.repo, provider, clock=w.clock, events=w.bus, engine=engine, rng=random.Random(1)
        )
        runner = Runner(dialer, None)
        runner.tick()
        assert twilio.requests == []  # nothing was handed over
        waiting = _attempts_of(w, numbers[0]) + _attempts_of(w, numbers[1])
        assert [a.status for a in waiting] == [AttemptStatus.DIALING] * 2  # waiting, not redialled
        assert all(a.error for a in waiting)
        assert len(vapi.calls) == 2  # the timed-out request did create its call (+ the third)
        side.run(runner)
    check_fallback_outcome(w, side)
    assert twilio.requests == []
    unavailable, timed_out = _attempts_of(w, numbers[0]), _attempts_of(w, numbers[1])
    # the 503: no call existed; given up as an error after 10 minutes, then dialled again
    # once the unknown-fate delay (15 minutes) had passed
    assert [a.outcome for a in unavailable] == [CallOutcome.ERROR, CallOutcome.ANSWERED]
    assert unavailable[1].created_at - unavailable[0].created_at >= timedelta(minutes=25)
    assert Counter(_dialled(KIT["vapi"], vapi))[numbers[0]] == 2
    # the timeout: settled by the created call's own webhook (busy), then retried as usual;
    # the provider's call id was learnt from the webhook
    assert [a.outcome for a in timed_out] == [CallOutcome.BUSY, CallOutcome.ANSWERED]
    assert timed_out[0].external_call_id in vapi.calls
    assert timed_out[1].created_at - timed_out[0].created_at < timedelta(minutes=2)


def _attempts_of(w: World, phone: str) -> list[Any]:
    recipients = [r for r in all_recipients(w.repo, w.campaign_id) if r.phone == phone]
    return sorted(all_attempts(w.repo, recipients)[recipients[0].id], key=lambda a: a.number)


def check_fallback_outcome(w: World, side: ProviderSide) -> None:
    campaign = check_campaign(w.repo, w.campaign_id, now=w.clock.now(), events=list(w.bus.history))
    assert campaign.status is CampaignStatus.COMPLETED
    for r in all_recipients(w.repo, w.campaign_id):
        assert r.outcome == w.scripts[r.phone][-1]
        assert side.placed_per_number[r.phone] == len(w.scripts[r.phone])
    assert side.max_live <= CONCURRENCY


def test_a_forged_webhook_is_refused_for_every_provider_and_changes_nothing() -> None:
    """One genuine call per provider; the forged copy of its final status is refused
    before anything is read, and the genuine one still applies afterwards."""
    for kit in KITS:
        repo = InMemoryRepository()
        with kit.case.fake() as server, kit.case.sync(server) as adapter:
            w = world(kit, repo, n=1)
            Dialer(repo, adapter, clock=w.clock, events=w.bus).tick()
            ((call_id, _),) = kit.calls(server)
            genuine = kit.final(server, call_id, "answered", w.clock.now())
            before = w.service.get(WS, w.campaign_id)
            with pytest.raises(WebhookVerificationError) as caught:
                verify_and_parse(
                    kit.name, kit.forge(genuine), now=w.clock.now(), **kit.secrets(server)
                )
            assert caught.value.provider == kit.name
            assert w.service.get(WS, w.campaign_id) == before
            event = verify_and_parse(kit.name, genuine, now=w.clock.now(), **kit.secrets(server))
            assert w.service.apply_event(event).effect is Effect.APPLIED
            assert w.service.get(WS, w.campaign_id).campaign.counters.answered == 1


def test_scripts_cover_every_outcome_the_kits_can_send() -> None:
    outcomes = {o for s in SCRIPTS for o in s}
    for kit in KITS:
        with kit.case.fake() as server, kit.case.sync(server) as adapter:
            w = world(kit, InMemoryRepository(), n=1)
            Dialer(w.repo, adapter, clock=w.clock, events=w.bus).tick()
            ((call_id, _),) = kit.calls(server)
            for outcome in outcomes:
                request = kit.final(server, call_id, outcome, w.clock.now())
                event = verify_and_parse(
                    kit.name, request, now=w.clock.now(), **kit.secrets(server)
                )
                assert event.final and event.outcome is CallOutcome(outcome), (kit.name, outcome)
                assert event.attempt_id is not None

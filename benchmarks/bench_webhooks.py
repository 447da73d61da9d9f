"""Provider webhooks end to end on SQLite: verify + parse + apply, per second.

What a web handler does for each provider callback: check the signature and read
the body (:func:`outdial.providers.verify_and_parse`), then apply the event
exactly once (:meth:`outdial.CampaignService.apply_event`: one SQLite
transaction that ends the attempt, moves the recipient and the campaign's
counters, and emits the domain events to an :class:`~outdial.EventBus`).

Setup (not timed): a SQLite file (WAL, ``synchronous=normal``, the default)
with one campaign per provider of ``N`` recipients, every recipient claimed and
its call placed (the attempt is ``placed`` with the provider's call id), and
``N`` final webhooks signed the way the provider signs them (Twilio: form body
+ ``X-Twilio-Signature``, attempt id in the callback URL; Vapi: HMAC-SHA256
``x-signature`` + ``x-timestamp``, attempt id in the call's metadata).

Measured, per provider:

- **end to end**: verify + parse + apply of the ``N`` webhooks, one after
  another, as one handler would (target: >= 5,000 events/s);
- **split**: verify + parse alone over the same requests, and apply alone
  (end to end minus verify + parse);
- **duplicates**: the same ``N`` webhooks delivered again (each is refused as a
  duplicate, nothing written);
- **group commit**: ``HANDLERS`` concurrent asyncio handlers, each doing verify +
  parse + ``await applier.apply(event)`` (:class:`outdial.group_commit.EventApplier`:
  whatever is queued is applied in one transaction in a worker thread, one commit
  per batch), over ``N`` webhooks of a fresh campaign; with the mean batch size.

``python benchmarks/bench_webhooks.py [N]`` prints the figures; ``--profile``
adds the functions where apply spends its time. :func:`run` returns
``(measure, value)`` rows.
"""

from __future__ import annotations

import asyncio
import base64
import cProfile
import hashlib
import hmac
import io
import json
import logging
import pstats
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
import structlog

from outdial import AgentSettings, CampaignService, EventBus
from outdial.dispatch import DialerCore, EventResult
from outdial.group_commit import EventApplier
from outdial.ports import CallEvent, CallStatus, PlacedCall, SystemClock, WebhookRequest
from outdial.providers import WebhookVerifier, webhook_for
from outdial.simulation import sample_numbers
from outdial.sql import connect
from outdial.sql.repository import SqlUnitOfWork

__all__ = ["run"]

N = 4000
SAMPLE = 200  # webhooks whose SQL is recorded and replayed with bare sqlite3
BATCH = 100
HANDLERS = 64  # concurrent webhook handlers in the group-commit row
TARGET = 5000.0
WORKSPACE = "bench"
CALLBACK = "https://app.example/webhooks"

AGENTS = {
    "twilio": AgentSettings(
        provider="twilio", phone_number="+12125550100", options={"url": "https://app.example/t"}
    ),
    "vapi": AgentSettings(provider="vapi", external_agent_id="asst-1", phone_number_id="pn-1"),
}
SECRETS: dict[str, dict[str, Any]] = {
    "twilio": {"auth_token": "twilio-token"},
    "vapi": {"hmac": "vapi-hmac"},
}


def _quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


# -- signed webhooks ------------------------------------------------------------------------------


def twilio_webhook(attempt_id: str, sid: str, now: datetime) -> WebhookRequest:
    url = f"{CALLBACK}/twilio?attempt_id={attempt_id}"
    params = {
        "CallSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": "+12125550100",
        "To": "+12125554567",
        "CallStatus": "completed",
        "CallDuration": "42",
        "AnsweredBy": "human",
        "SequenceNumber": "3",
        "Timestamp": format_datetime(now, usegmt=True),
        "Direction": "outbound-api",
        "ApiVersion": "2010-04-01",
    }
    signed = url + "".join(k + params[k] for k in sorted(params))
    token = SECRETS["twilio"]["auth_token"].encode()
    digest = hmac.new(token, signed.encode(), hashlib.sha1).digest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": base64.b64encode(digest).decode(),
    }
    return WebhookRequest("POST", url, headers, urlencode(params).encode())


def vapi_webhook(attempt_id: str, call_id: str, now: datetime) -> WebhookRequest:
    message = {
        "type": "end-of-call-report",
        "endedReason": "customer-ended-call",
        "call": {
            "id": call_id,
            "status": "ended",
            "assistantOverrides": {"metadata": {"attempt_id": attempt_id}},
        },
        "startedAt": "2026-03-02T15:00:00.000Z",
        "endedAt": "2026-03-02T15:01:30.000Z",
        "timestamp": int(now.timestamp() * 1000),
        "artifact": {"transcript": "AI: Hello\nUser: Hi " * 40},
    }
    body = json.dumps({"message": message}).encode()
    stamp = str(int(now.timestamp() * 1000))
    secret = SECRETS["vapi"]["hmac"].encode()
    digest = hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "x-signature": digest, "x-timestamp": stamp}
    return WebhookRequest("POST", f"{CALLBACK}/vapi", headers, body)


BUILDERS: dict[str, Callable[[str, str, datetime], WebhookRequest]] = {
    "twilio": twilio_webhook,
    "vapi": vapi_webhook,
}


# -- setup ------------------------------------------------------------------------------------


def placed_campaign(
    service: CampaignService, core: DialerCore, provider: str, n: int, *, seed: int = 0
) -> list[tuple[str, str]]:
    """A started campaign of ``n`` recipients, every call placed; (attempt id, call id)s."""
    campaign = service.create(
        WORKSPACE,
        name=f"{provider} webhooks {seed}",
        agent=AGENTS[provider],
        concurrency_limit=n,
        max_recipients=n,
        recipients=[{"phone_number": p} for p in sample_numbers(n, seed=seed)],
    )
    service.start(WORKSPACE, campaign.id)
    clock = service.clock
    placed: list[tuple[str, str]] = []
    while len(placed) < n:
        claims, _plan = core.dispatch(clock.now())
        if not claims:
            raise RuntimeError(f"only {len(placed)} of {n} recipients could be claimed")
        for claim in claims:
            call_id = f"{provider}-call-{claim.attempt.id}"
            core.record_placed(clock.now(), claim, PlacedCall(provider, call_id))
            placed.append((claim.attempt.id, call_id))
    return placed


def _verify_all(verifier: WebhookVerifier, requests: list[WebhookRequest]) -> list[CallEvent]:
    now = SystemClock().now()
    return [verifier.parse(request, now=now) for request in requests]


class Timer:
    """Wall-clock and CPU seconds of a block (the CPU figure is the stable one on a
    busy machine: other processes barely change it)."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def _statements(engine: Any, apply: Callable[[], object]) -> list[tuple[str, Any]]:
    """The SQL statements (and parameters) ``apply`` sends: through SQLAlchemy and
    the hot ones outdial sends to the driver itself (``SqlUnitOfWork._run``, and
    ``_begin``'s ``BEGIN IMMEDIATE``)."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        seen.append((statement, params))

    direct, begin = SqlUnitOfWork._run, SqlUnitOfWork._begin

    def run_recorded(uow: SqlUnitOfWork, statement: Any, params: Any) -> Any:
        compiled = uow._driver.compiled(statement)
        seen.append((compiled.sql, compiled.bind(params)))
        return direct(uow, statement, params)

    def begin_recorded(uow: SqlUnitOfWork) -> None:
        seen.append(("BEGIN IMMEDIATE", ()))  # sent to the driver by the unit of work
        begin(uow)

    sa.event.listen(engine, "before_cursor_execute", record)
    SqlUnitOfWork._run = run_recorded  # type: ignore[method-assign,assignment]
    SqlUnitOfWork._begin = begin_recorded  # type: ignore[method-assign,assignment]
    try:
        apply()
    finally:
        SqlUnitOfWork._run = direct  # type: ignore[method-assign]
        SqlUnitOfWork._begin = begin  # type: ignore[method-assign]
        sa.event.remove(engine, "before_cursor_execute", record)
    return seen


def _raw_replay(path: Path, statements: list[tuple[str, Any]]) -> tuple[int, Timer]:
    """Replay ``statements`` with the bare sqlite3 module, one transaction per event
    (WAL, synchronous=NORMAL, as outdial.sql sets up): SQLite's own cost."""
    events: list[list[tuple[str, Any]]] = []
    for statement, params in statements:
        if statement.startswith("BEGIN"):
            events.append([])
        elif events:
            events[-1].append((statement, params))
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        with Timer() as timer:
            for group in events:
                con.execute("BEGIN IMMEDIATE")
                for statement, params in group:
                    con.execute(statement, params).fetchall()
                con.execute("COMMIT")
    finally:
        con.close()
    return len(events), timer


def group_commit(
    service: CampaignService, verifier: WebhookVerifier, requests: list[WebhookRequest]
) -> tuple[Timer, EventApplier, list[EventResult]]:
    """``HANDLERS`` concurrent handlers (verify + parse + ``await applier.apply``)
    over ``requests``, as a web service receiving them at once would run them."""
    clock = service.clock
    results: list[EventResult] = []

    async def serve() -> EventApplier:
        pending = iter(requests)
        async with EventApplier(service.apply_events) as applier:

            async def handler() -> None:
                for request in pending:  # the next webhook that arrives
                    event = verifier.parse(request, now=clock.now())
                    results.append(await applier.apply(event))

            await asyncio.gather(*(handler() for _ in range(HANDLERS)))
        return applier

    with Timer() as timer:
        applier = asyncio.run(serve())
    return timer, applier, results


def measure(provider: str, n: int, folder: Path, *, profile: bool = False) -> dict[str, Any]:
    """Figures for one provider's ``n`` webhooks (a fresh SQLite file)."""
    path = folder / f"{provider}.sqlite"
    repo = connect(f"sqlite:///{path}", create=True)
    try:
        clock = SystemClock()
        bus = EventBus(keep=100)
        service = CampaignService(repo, clock=clock, events=bus)
        core = DialerCore(repo, worker_id="bench")
        placed = placed_campaign(service, core, provider, n)
        batched = placed_campaign(service, core, provider, n, seed=1)
        sample = placed_campaign(service, core, provider, SAMPLE, seed=2)
        concurrent = placed_campaign(service, core, provider, n, seed=3)
        now = clock.now()
        build = BUILDERS[provider]
        requests = [build(aid, cid, now) for aid, cid in placed]
        verifier = webhook_for(provider, **SECRETS[provider])

        # verify + parse alone (pure: repeatable, best of 3)
        best: Timer | None = None
        for _ in range(3):
            with Timer() as timer:
                events = _verify_all(verifier, requests)
            best = timer if best is None or timer.cpu < best.cpu else best
        verify = best
        assert verify is not None
        assert all(e.final and e.status is CallStatus.ENDED for e in events)

        # end to end, as a handler: verify + parse + apply, one webhook at a time
        profiler = cProfile.Profile() if profile else None
        with Timer() as total:
            if profiler is not None:
                profiler.enable()
            effects = [
                service.apply_event(verifier.parse(request, now=clock.now())).effect
                for request in requests
            ]
            if profiler is not None:
                profiler.disable()
        assert all(e is not None and e.value == "applied" for e in effects), set(effects)

        # the same webhooks again: every one a duplicate
        with Timer() as duplicates:
            again = [
                service.apply_event(verifier.parse(request, now=clock.now())).effect
                for request in requests
            ]
        assert all(e is not None and e.value == "duplicate" for e in again)

        # the commit boundary: BATCH webhooks per transaction (each a nested savepoint)
        batch_requests = [build(aid, cid, now) for aid, cid in batched]
        with Timer() as grouped:
            for start in range(0, n, BATCH):
                with repo.transaction():
                    for request in batch_requests[start : start + BATCH]:
                        service.apply_event(verifier.parse(request, now=clock.now()))

        # group commit: concurrent handlers, one transaction per batch
        gc_timer, applier, gc_results = group_commit(
            service, verifier, [build(aid, cid, now) for aid, cid in concurrent]
        )
        assert len(gc_results) == n
        assert all(r.effect is not None and r.effect.value == "applied" for r in gc_results)

        # the SQL one webhook sends, replayed below without SQLAlchemy or outdial
        sample_events = [verifier.parse(build(a, c, now), now=now) for a, c in sample]
        statements = _statements(
            repo.engine, lambda: [service.apply_event(e) for e in sample_events]
        )
        for campaign in service.list_campaigns(WORKSPACE).items:
            stats = service.stats(WORKSPACE, campaign.id)
            assert (stats.completed, stats.in_flight) == (stats.total, 0)
    finally:
        repo.close()
    replayed, raw = _raw_replay(path, statements)
    figures: dict[str, Any] = {
        "total": total,
        "verify": verify,
        "duplicates": duplicates,
        "grouped": grouped,
        "group_commit": gc_timer,
        "mean_batch": applier.mean_batch,
        "raw": raw,
        "raw_events": replayed,
        "statements": len(statements) / SAMPLE,
    }
    if profiler is not None:
        out = io.StringIO()
        stats_ = pstats.Stats(profiler, stream=out).sort_stats("cumtime")
        stats_.print_stats(r"outdial/(dispatch|service|engine|sql)|commit|execute'", 30)
        figures["profile"] = out.getvalue()
    return figures


def _rate(n: int, timer: Timer) -> str:
    return f"{n / timer.wall:,.0f}/s wall, {n / timer.cpu:,.0f}/s CPU"


def run(n: int = N, *, profile: bool = False) -> list[tuple[str, str]]:
    """Measure and return ``(label, value)`` rows."""
    _quiet()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as folder:
        for provider in BUILDERS:
            f = measure(provider, n, Path(folder), profile=profile)
            total, verify = f["total"], f["verify"]
            apply_cpu = max(total.cpu - verify.cpu, 1e-9)
            verdict = "meets" if n / total.cpu >= TARGET else "under"
            rows += [
                (
                    f"{provider}: verify+parse+apply, {n:,} webhooks",
                    f"{_rate(n, total)} ({verdict} the {TARGET:,.0f}/s target)",
                ),
                (
                    f"{provider}:   verify+parse alone",
                    f"{n / verify.cpu:,.0f}/s CPU ({verify.cpu / total.cpu:.0%} of the time)",
                ),
                (
                    f"{provider}:   apply alone (1 SQLite transaction each)",
                    f"{n / apply_cpu:,.0f}/s CPU, {apply_cpu / n * 1e6:,.0f} µs each",
                ),
                (f"{provider}:   {BATCH} webhooks per transaction", _rate(n, f["grouped"])),
                (
                    f"{provider}: group commit, {HANDLERS} concurrent handlers",
                    f"{_rate(n, f['group_commit'])} (mean batch {f['mean_batch']:.1f})",
                ),
                (f"{provider}: duplicates refused (nothing written)", _rate(n, f["duplicates"])),
                (
                    f"{provider}: SQLite floor: the same SQL, bare sqlite3",
                    f"{_rate(f['raw_events'], f['raw'])} "
                    f"({f['statements']:.0f} statements per webhook, BEGIN included)",
                ),
            ]
            if profile:
                rows.append((f"{provider}: where apply spends its time", "\n" + f["profile"]))
    return rows


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    for label, value in run(int(args[0]) if args else N, profile="--profile" in sys.argv):
        print(f"{label:52s} {value}")

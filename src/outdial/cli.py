"""The ``outdial`` command line: ``demo``, ``simulate`` and ``db upgrade``.

``python -m outdial demo`` imports a sample CSV into a campaign with business
hours, a concurrency limit and retries, runs it to completion against the
simulated provider in virtual time (a progress bar on stderr), and prints a
report. It stores everything in a SQLite file when the ``sql`` extra is
installed (``--db`` chooses another URL), in memory otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import random
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import structlog

from outdial.errors import OutdialError

__all__ = ["main"]

DEFAULT_DB = "sqlite:///outdial-demo.sqlite"
_START = datetime(2026, 11, 23, 13, 0, tzinfo=timezone.utc)  # Monday 08:00 New York


def _quiet_logs(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))


def _sample_csv() -> Any:
    local = Path("examples/recipients.csv")
    if local.exists():
        return local
    return resources.files("outdial").joinpath("data/demo_recipients.csv")


def _repository(url: str | None, out: TextIO) -> tuple[Any, str]:
    if url == "memory":
        from outdial.testing import InMemoryRepository

        return InMemoryRepository(), "memory"
    try:
        sql: Any = importlib.import_module("outdial.sql")
    except ImportError:
        if url is not None:
            raise
        from outdial.testing import InMemoryRepository

        print(
            "note: the sql extra is not installed (pip install 'outdial[sql]'); running in memory",
            file=out,
        )
        return InMemoryRepository(), "memory"
    target = url or DEFAULT_DB
    if target.startswith("sqlite:///") and url is None:
        Path(target.removeprefix("sqlite:///")).unlink(missing_ok=True)
    repo = sql.connect(target, create=True)
    return repo, target


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = 0 if total == 0 else int(width * done / total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def demo(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="outdial demo", description=demo.__doc__)
    parser.add_argument("--db", default=None, help=f"database URL (default {DEFAULT_DB})")
    parser.add_argument("--csv", default=None, help="recipients CSV (default: the sample)")
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    out = out or sys.stdout
    _quiet_logs(args.verbose)

    from outdial.calendar import BusinessHours
    from outdial.campaign import AgentSettings
    from outdial.dialer import Dialer
    from outdial.events import EventBus
    from outdial.retry import Exponential, RetryPolicy
    from outdial.service import CampaignService
    from outdial.simulation import SimulatedProvider, SimulationProfile, VirtualClock

    clock = VirtualClock(_START)
    repo, where = _repository(args.db, out)
    bus = EventBus(keep=0)
    provider = SimulatedProvider(clock, SimulationProfile(), seed=args.seed)
    service = CampaignService(repo, clock=clock, events=bus, providers=provider)
    hours = BusinessHours.weekly(
        "America/New_York", {"mon-fri": [("09:00", "12:00"), ("13:00", "17:00")]}
    )
    campaign = service.create(
        "demo",
        name="Renewal reminders",
        agent=AgentSettings(
            provider="simulated",
            prompt_template="Hello {first_name}, this is a reminder about your renewal.",
        ),
        business_hours=hours,
        timezone="America/New_York",
        rule_set="standard",
        default_region="US",
        concurrency_limit=args.concurrency,
        retry_policy=RetryPolicy(
            max_attempts=args.max_attempts,
            backoff=Exponential(timedelta(minutes=30), timedelta(hours=4)),
        ),
        finalize=False,
    )
    source = Path(args.csv) if args.csv else _sample_csv()
    with source.open("rb") as fh:
        report = service.import_csv("demo", campaign.id, fh, default_region="US")
    print(
        f"imported {report.imported} recipients from {getattr(source, 'name', source)} "
        f"({report.rejected} rows rejected, {report.duplicates_in_file} duplicates) into {where}",
        file=out,
    )
    for problem in report.problems[:5]:
        print(f"  row {problem.row}: {problem.column}: {problem.reason}", file=out)
    service.finalize("demo", campaign.id)
    service.start("demo", campaign.id)
    dialer = Dialer(
        repo, provider, clock=clock, events=bus, rng=random.Random(args.seed), worker_id="demo"
    )
    step = timedelta(minutes=15)
    err = sys.stderr
    while True:
        summary = dialer.run_until_idle(until=clock.now() + step)
        stats = service.stats("demo", campaign.id)
        done = stats.completed + stats.failed + stats.skipped
        if not args.no_progress:
            local = clock.now().astimezone(hours.zone).strftime("%a %H:%M")
            err.write(
                f"\r{_bar(done, stats.total)} {done}/{stats.total}  in flight {stats.in_flight:>2}"
                f"  {local} New York"
            )
            err.flush()
        status = service.get("demo", campaign.id).campaign.status
        if status.final or (
            summary.calls_placed == 0
            and summary.events_applied == 0
            and stats.in_flight == 0
            and stats.pending == 0
        ):
            break
    if not args.no_progress:
        err.write("\n")
    details = service.get("demo", campaign.id)
    s, c = details.stats, details.campaign
    elapsed = (c.completed_at or clock.now()) - (c.started_at or _START)
    print(f"campaign {c.name!r} {c.status.value} after {elapsed} of virtual time", file=out)
    print(
        f"recipients {s.total}: {s.completed} completed, {s.failed} failed, {s.skipped} skipped",
        file=out,
    )
    rate = f"{s.answer_rate:.1%}" if s.answer_rate is not None else "n/a"
    print(f"attempts {s.attempts}, answered {s.answered}, answer rate {rate}", file=out)
    if s.average_duration_seconds is not None:
        print(f"average answered call {s.average_duration_seconds:.0f} s", file=out)
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in s.by_outcome.items()), file=out)
    return 0


def simulate_cmd(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="outdial simulate")
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    _quiet_logs(False)
    from outdial.simulation import simulate

    result = simulate(
        args.recipients,
        concurrency=args.concurrency,
        max_attempts=args.max_attempts,
        seed=args.seed,
    )
    print(result.summary(), file=out or sys.stdout)
    return 0


def db_cmd(argv: Sequence[str], *, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(prog="outdial db")
    parser.add_argument("action", choices=["upgrade", "current"])
    parser.add_argument("url")
    args = parser.parse_args(argv)
    try:
        sql: Any = importlib.import_module("outdial.sql")
    except ImportError:
        print("the sql extra is needed: pip install 'outdial[sql]'", file=sys.stderr)
        return 2
    try:
        if args.action == "upgrade":
            sql.upgrade(args.url)
            print(
                f"{args.url} is at schema {sql.current_revision(args.url)}", file=out or sys.stdout
            )
        else:
            print(sql.current_revision(args.url) or "none", file=out or sys.stdout)
    except OutdialError as exc:
        print(f"outdial db {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except OutdialError as exc:  # a clear message, not a traceback
        print(f"outdial: {exc}", file=sys.stderr)
        return 1


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"demo": demo, "simulate": simulate_cmd}
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: outdial {demo,simulate,db} ...", file=sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "db":
        return db_cmd(rest)
    if command not in commands:
        print(f"unknown command {command!r}; try demo, simulate or db", file=sys.stderr)
        return 2
    return commands[command](rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

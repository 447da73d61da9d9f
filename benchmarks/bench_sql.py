"""How fast the SQL repositories claim and complete calls, and import recipients.

Run it as a script (``python benchmarks/bench_sql.py``) to print the figures;
:func:`run` returns them as ``(measure, value)`` rows:

- **durable claim + complete throughput**, in recipients per second: worker
  processes run :class:`outdial.dispatch.DialerCore` in a loop, each round one
  dispatch transaction that claims a batch of due recipients (the attempt is
  committed before any call would be placed) and then one transaction per call
  that applies its final result (exactly once, counters moved). PostgreSQL with
  1, 2 and 4 workers (the scaling), on the test server (``fsync`` off) and on a
  server with ``fsync`` and ``synchronous_commit`` on; SQLite with one process
  (WAL, ``synchronous=NORMAL``: survives a process crash; and ``FULL``). Each
  rate comes with the CPU it took per recipient: the workers' and, for a local
  PostgreSQL server, the server's (read from ``/proc``); on a shared machine
  those move far less than the rate does (:func:`throughput_cpu`).
- **import**: 100,000 CSV rows (phone parsing and validation included) into
  SQLite and into PostgreSQL, in rows per second, next to a bare
  ``phonenumbers.parse`` + ``is_valid_number`` loop over the same numbers;
- **peak memory** (the process's maximum resident set) of importing a
  1,000,000-row CSV file into SQLite, in a fresh process.

PostgreSQL comes from ``$OUTDIAL_BENCH_POSTGRES_URL`` when set, else from the
server binaries the test suite uses (``tests/support/postgres.py``); without
them the PostgreSQL rows say so.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import phonenumbers
import sqlalchemy as sa
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

from bench_import import csv_lines, phone_numbers  # noqa: E402

from outdial import AgentSettings, CallEvent, CallOutcome, CallStatus, CampaignService  # noqa: E402
from outdial.dispatch import DialerCore  # noqa: E402
from outdial.engine import Engine, EngineConfig  # noqa: E402
from outdial.ports import SystemClock  # noqa: E402
from outdial.simulation import sample_numbers  # noqa: E402
from outdial.sql import connect  # noqa: E402

THROUGHPUT_RECIPIENTS = 10_000
# each worker's share of the campaign's concurrency limit: the most one dispatch round claims
# (EngineConfig.max_dials_per_round), so the workers share the free slots
BATCH_PER_WORKER = 100
IMPORT_ROWS = 100_000
MEMORY_ROWS = 1_000_000
NOW = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)


def _quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


# -- PostgreSQL servers ------------------------------------------------------------------------


@contextlib.contextmanager
def _postgres(durable: bool, options: Sequence[str] = ()) -> Iterator[str | None]:
    """A PostgreSQL URL (None if there is no server); ``durable`` turns fsync on.

    ``options`` are more ``-c name=value`` server settings for the durable server
    (profiling: ``shared_preload_libraries=pg_stat_statements``...)."""
    given = os.environ.get("OUTDIAL_BENCH_POSTGRES_URL")
    if given:
        yield given
        return
    try:
        from support import postgres as pg
    except ImportError:
        yield None
        return
    if not durable:
        try:
            with pg.throwaway_postgres() as url:
                yield url
        except pg.PostgresUnavailable:
            yield None
        return
    bindir = pg.find_pg_bin()
    if bindir is None:
        yield None
        return
    account = pg._service_account()
    prefix = pg._as_user(account)
    root = Path(tempfile.mkdtemp(prefix="outdial-bench-pg-", dir="/tmp" if account else None))
    data, log = root / "data", root / "server.log"
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
    port = pg._free_port()
    started = False
    try:
        pg._run(
            [
                *prefix,
                str(bindir / "initdb"),
                f"--pgdata={data}",
                f"--username={pg.SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ],
            cwd=root,
            what="initdb",
        )
        options = " ".join(
            [
                f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}",
                "-c fsync=on -c synchronous_commit=on -c full_page_writes=on -c TimeZone=UTC",
                *(f"-c {option}" for option in options),
            ]
        )
        pg._run(
            [
                *prefix,
                str(bindir / "pg_ctl"),
                "start",
                f"--pgdata={data}",
                f"--log={log}",
                "--wait",
                f"--options={options}",
            ],
            cwd=root,
            what="pg_ctl start",
        )
        started = True
        pg._run(
            [
                str(bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                pg.SUPERUSER,
                "bench",
            ],
            cwd=root,
            what="createdb",
        )
        yield f"postgresql+psycopg://{pg.SUPERUSER}@127.0.0.1:{port}/bench"
    except pg.PostgresUnavailable:
        yield None
    finally:
        if started:
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "stop", f"--pgdata={data}", "-m", "immediate"],
                capture_output=True,
                check=False,
            )
        subprocess.run(["rm", "-rf", str(root)], check=False)


def _fresh_database(server_url: str, name: str) -> str:
    """An empty database ``name`` on the server (dropped first if it exists)."""
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    return sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)


# -- claim + complete throughput --------------------------------------------------------------


def _campaign(url: str, recipients: int, concurrency: int) -> str:
    repo = connect(url, create=True)
    try:
        service = CampaignService(repo, clock=SystemClock())
        campaign = service.create(
            "bench",
            name="Throughput",
            agent=AgentSettings(provider="simulated"),
            concurrency_limit=concurrency,
            max_recipients=recipients,
            recipients=[{"phone_number": p} for p in sample_numbers(recipients, seed=3)],
        )
        service.start("bench", campaign.id)
        return campaign.id
    finally:
        repo.close()


def _worker(url: str, campaign_id: str, worker_id: str, go: Any, results: Any) -> None:
    """Claim batches and complete them until the campaign is over."""
    _quiet()
    repo = connect(url)
    engine = Engine(EngineConfig(max_dials_per_round=BATCH_PER_WORKER))
    core = DialerCore(repo, engine, worker_id=worker_id)
    clock = SystemClock()
    done = 0
    go.wait()
    cpu = time.process_time()
    while True:
        claims, _plan = core.dispatch(clock.now())
        if not claims:
            with repo.transaction() as uow:
                campaign = uow.get_campaign(campaign_id)
            if campaign.status.final or campaign.counters.remaining == 0:
                break
            time.sleep(0.0005)
            continue
        for claim in claims:
            core.apply_event(
                clock.now(),
                CallEvent(
                    "bench",
                    CallStatus.ENDED,
                    attempt_id=claim.attempt.id,
                    outcome=CallOutcome.ANSWERED,
                    duration_seconds=30.0,
                ),
            )
        done += len(claims)
    cpu = time.process_time() - cpu
    repo.close()
    results.put((done, cpu))


def _postmaster(url: str) -> int | None:
    """The process id of the server at ``url`` when it runs on this machine (a
    superuser can read its data directory), else None."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            folder = conn.exec_driver_sql("SHOW data_directory").scalar()
        return int((Path(str(folder)) / "postmaster.pid").read_text().split()[0])
    except (sa.exc.DBAPIError, OSError, ValueError, IndexError):
        return None
    finally:
        engine.dispose()


def _postgres_cpu(postmaster: int | None) -> float | None:
    """CPU seconds the server has used so far: the postmaster, its live processes
    and (counted into the postmaster) the backends that exited; None if unknown."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0
    if postmaster is None or not tick or not Path("/proc").is_dir():
        return None
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # fields[1] is the parent's id
        if int(entry.name) == postmaster:
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        elif int(fields[1]) == postmaster:
            total += sum(int(x) for x in fields[11:13])
    return total / tick


def throughput(url: str, workers: int, recipients: int = THROUGHPUT_RECIPIENTS) -> float:
    """Recipients claimed and completed per second by ``workers`` processes."""
    return throughput_cpu(url, workers, recipients)[0]


def throughput_cpu(
    url: str, workers: int, recipients: int = THROUGHPUT_RECIPIENTS
) -> tuple[float, float, float | None]:
    """:func:`throughput`, with the CPU it took per recipient: ``(per second, worker
    CPU seconds, PostgreSQL server CPU seconds or None)``. The CPU figures hardly
    move with other load on the machine, unlike the rate."""
    campaign_id = _campaign(url, recipients, BATCH_PER_WORKER * workers)
    context = multiprocessing.get_context("spawn")
    go, results = context.Event(), context.Queue()
    processes = [
        context.Process(target=_worker, args=(url, campaign_id, f"bench-{n}", go, results))
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    time.sleep(3.0)  # let every worker import and connect before the clock starts
    postmaster = _postmaster(url) if url.startswith("postgresql") else None
    server = _postgres_cpu(postmaster)
    started = time.perf_counter()
    go.set()
    reports = [results.get(timeout=600) for _ in processes]
    elapsed = time.perf_counter() - started
    if server is not None:
        after = _postgres_cpu(postmaster)
        server = None if after is None else after - server
    for process in processes:
        process.join()
    done = sum(n for n, _ in reports)
    assert done == recipients, (done, recipients)
    cpu = sum(c for _, c in reports) / recipients
    return recipients / elapsed, cpu, None if server is None else server / recipients


# -- import -----------------------------------------------------------------------------------


def _import_csv(url: str, path: Path, rows: int) -> float:
    """Seconds to import the CSV at ``path`` into a new campaign (one transaction)."""
    repo = connect(url, create=True)
    try:
        service = CampaignService(repo, clock=SystemClock())
        campaign = service.create(
            "bench",
            name="Import",
            agent=AgentSettings(provider="simulated"),
            max_recipients=rows,
            finalize=False,
        )
        started = time.perf_counter()
        with path.open("rb") as source:
            report = service.import_csv("bench", campaign.id, source, default_region="US")
        elapsed = time.perf_counter() - started
        assert report.imported == rows, report
        return elapsed
    finally:
        repo.close()


def _bare_parse(numbers: list[str]) -> float:
    parse, is_valid = phonenumbers.parse, phonenumbers.is_valid_number
    started = time.perf_counter()
    assert sum(1 for text in numbers if is_valid(parse(text, "US"))) == len(numbers)
    return time.perf_counter() - started


def _write_csv(path: Path, numbers: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.writelines(csv_lines(numbers))


def _peak_rss_kib() -> int:
    """This process's peak resident set (KiB): ``VmHWM`` where Linux has it.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that figure across
    ``execve``, so a child started by a big parent reports the parent's size at the
    fork (the benchmark's parent holds a million generated numbers)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _memory_child(url: str, path: str, rows: int) -> None:
    """In a fresh process: import, then print the peak resident set in MiB."""
    _quiet()
    _import_csv(url, Path(path), rows)
    print(f"{_peak_rss_kib() / 1024:.1f}")


def peak_import_memory(url: str, path: Path, rows: int) -> float:
    """Peak RSS (MiB) of a fresh process importing ``rows`` CSV rows from ``path``."""
    code = (
        "import sys; sys.path.insert(0, {bench!r}); import bench_sql; "
        "bench_sql._memory_child({url!r}, {path!r}, {rows})"
    ).format(bench=str(ROOT / "benchmarks"), url=url, path=str(path), rows=rows)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=3600
    )
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(done.args)} failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


# -- the report -------------------------------------------------------------------------------


class _Rows(list[tuple[str, str]]):
    """The report's rows; each one is also printed at once when ``echo`` is set."""

    def __init__(self, echo: bool) -> None:
        super().__init__()
        self.echo = echo

    def append(self, row: tuple[str, str]) -> None:
        super().append(row)
        if self.echo:
            print(f"{row[0]:<58} {row[1]}", flush=True)


def run(*, echo: bool = False) -> list[tuple[str, str]]:
    """Every measure as ``(measure, value)``; ``echo`` prints each as it is measured."""
    _quiet()
    rows = _Rows(echo)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for synchronous in ("normal", "full"):
            url = f"sqlite:///{tmp / f'throughput-{synchronous}.db'}?synchronous={synchronous}"
            rate, cpu, _ = throughput_cpu(url, 1)
            rows.append(
                (
                    f"SQLite claim+complete, 1 process, synchronous={synchronous}",
                    f"{rate:,.0f}/s ({cpu * 1e6:,.0f} µs CPU per recipient)",
                )
            )
        for durable in (False, True):
            label = "fsync on" if durable else "fsync off"
            with _postgres(durable) as server:
                if server is None:
                    rows.append((f"PostgreSQL claim+complete ({label})", "no server"))
                    continue
                rates = []
                for workers in (1, 2, 4):
                    url = _fresh_database(server, f"bench_tp_{workers}")
                    rate, cpu, server_cpu = throughput_cpu(url, workers)
                    rates.append(rate)
                    served = "" if server_cpu is None else f" + {server_cpu * 1e6:,.0f} server"
                    rows.append(
                        (
                            f"PostgreSQL claim+complete ({label}), {workers} worker(s)",
                            f"{rate:,.0f}/s (CPU per recipient: {cpu * 1e6:,.0f} µs worker"
                            f"{served})",
                        )
                    )
                rows.append(
                    (f"PostgreSQL scaling 1 -> 4 workers ({label})", f"x{rates[2] / rates[0]:.2f}")
                )

        numbers = phone_numbers(IMPORT_ROWS)
        csv_path = tmp / "import.csv"
        _write_csv(csv_path, numbers)
        bare = min(_bare_parse(numbers) for _ in range(3))
        rows.append(
            (f"phonenumbers parse + is_valid, {IMPORT_ROWS:,}", f"{IMPORT_ROWS / bare:,.0f} rows/s")
        )
        sqlite_import = _import_csv(f"sqlite:///{tmp / 'import.db'}", csv_path, IMPORT_ROWS)
        rows.append(
            (
                f"import {IMPORT_ROWS:,} CSV rows into SQLite",
                f"{IMPORT_ROWS / sqlite_import:,.0f} rows/s "
                f"(x{sqlite_import / bare:.2f} the parse)",
            )
        )
        with _postgres(False) as server:
            if server is None:
                rows.append((f"import {IMPORT_ROWS:,} CSV rows into PostgreSQL", "no server"))
            else:
                url = _fresh_database(server, "bench_import")
                pg_import = _import_csv(url, csv_path, IMPORT_ROWS)
                rows.append(
                    (
                        f"import {IMPORT_ROWS:,} CSV rows into PostgreSQL",
                        f"{IMPORT_ROWS / pg_import:,.0f} rows/s "
                        f"(x{pg_import / bare:.2f} the parse)",
                    )
                )

        big = tmp / "million.csv"
        _write_csv(big, phone_numbers(MEMORY_ROWS, seed=9))
        peak = peak_import_memory(f"sqlite:///{tmp / 'million.db'}", big, MEMORY_ROWS)
        rows.append(
            (
                f"peak memory, {MEMORY_ROWS:,}-row import into SQLite",
                f"{peak:,.0f} MiB RSS ({big.stat().st_size / 2**20:,.0f} MiB file)",
            )
        )
    return list(rows)


if __name__ == "__main__":
    run(echo=True)

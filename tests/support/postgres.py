"""A throwaway PostgreSQL server for one test session.

:func:`throwaway_postgres` finds the server binaries, ``initdb``\\ s a cluster into
a fresh temporary directory, starts it on a free ``127.0.0.1`` port (durability
off: ``fsync``, ``synchronous_commit`` and ``full_page_writes``, since the data is
thrown away), creates the ``outdial_test`` database and yields a SQLAlchemy URL
``postgresql+psycopg://postgres@127.0.0.1:PORT/outdial_test``.  On exit the
server is stopped and the directory removed.

Binaries are looked up in ``$OUTDIAL_PG_BIN``, then ``/usr/lib/postgresql/*/bin``
(newest version first), then ``PATH``.  PostgreSQL refuses to run as root, so
when the tests run as root the cluster belongs to the ``postgres`` system user
(or ``nobody`` when there is none) and the server commands run through
``runuser``/``setpriv``; as a normal user they run as that user.

Any step that cannot be done raises :class:`PostgresUnavailable` with a reason
that says what failed (and the server log's tail where there is one); the
``postgres_url`` fixture turns it into a skip, or a failure under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = [
    "DATABASE",
    "ENV_BIN",
    "ENV_URL",
    "SUPERUSER",
    "PostgresUnavailable",
    "find_pg_bin",
    "throwaway_postgres",
]

ENV_URL = "OUTDIAL_TEST_POSTGRES_URL"
"""Use the server at this SQLAlchemy URL instead of starting one."""
ENV_BIN = "OUTDIAL_PG_BIN"
"""Directory holding ``initdb`` and ``pg_ctl`` (searched first)."""
DATABASE = "outdial_test"
SUPERUSER = "postgres"
"""Name of the cluster's superuser (``initdb -U``), whatever the OS user is."""

_NEEDED = ("initdb", "pg_ctl", "postgres")
_START_TRIES = 3
_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No throwaway PostgreSQL server could be had; the message says why."""


def _has_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in _NEEDED)


def _version_key(directory: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: newest version first.
    return tuple(int(part) for part in re.findall(r"\d+", directory.parent.name))


def find_pg_bin(env: Mapping[str, str] | None = None) -> Path | None:
    """Return the directory with ``initdb``, ``pg_ctl`` and ``postgres``, or None.

    Looks in ``env[OUTDIAL_PG_BIN]``, then ``/usr/lib/postgresql/*/bin`` (newest
    first), then the directory that ``initdb`` on ``PATH`` resolves to.
    """
    env = os.environ if env is None else env
    candidates: list[Path] = []
    if env.get(ENV_BIN):
        candidates.append(Path(env[ENV_BIN]))
    candidates.extend(
        sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    )
    on_path = shutil.which("initdb", path=env.get("PATH"))
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    return next((c for c in candidates if _has_binaries(c)), None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_account() -> pwd.struct_passwd | None:
    """The account to run the server as: None means "as the current user"."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresUnavailable(
        "running as root, and neither a 'postgres' nor a 'nobody' user exists to run the server"
    )


def _as_user(account: pwd.struct_passwd | None) -> list[str]:
    """Command prefix that runs the rest of the command as ``account``."""
    if account is None:
        return []
    if shutil.which("runuser"):
        return ["runuser", "-u", account.pw_name, "--"]
    if shutil.which("setpriv"):
        return [
            "setpriv",
            f"--reuid={account.pw_uid}",
            f"--regid={account.pw_gid}",
            "--clear-groups",
            "--",
        ]
    raise PostgresUnavailable(
        "running as root, but neither runuser nor setpriv is available to drop privileges"
    )


def _clean_env() -> dict[str, str]:
    # PG* variables (PGDATA, PGPORT, PGHOST, ...) of the caller must not steer
    # the throwaway server or the client commands aimed at it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _run(cmd: list[str], *, cwd: Path, what: str) -> None:
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostgresUnavailable(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise PostgresUnavailable(
            f"{what} failed (exit {done.returncode}): {shlex.join(cmd)}\n{output}"
        )


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a private PostgreSQL server and yield its SQLAlchemy URL.

    With ``$OUTDIAL_TEST_POSTGRES_URL`` set, yield that URL and start nothing.
    Raises :class:`PostgresUnavailable` when no server can be had.
    """
    given = os.environ.get(ENV_URL)
    if given:
        yield given
        return

    bindir = find_pg_bin()
    if bindir is None:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found in "
            f"${ENV_BIN}, /usr/lib/postgresql/*/bin or PATH; install them "
            "(Debian: apt-get install postgresql, or run `.ci/postgres.sh ensure-binaries`) "
            f"or set {ENV_URL}"
        )
    account = _service_account()
    prefix = _as_user(account)

    # As root the directory lives under /tmp so the service account can reach it;
    # the socket path must also stay short (unix sockets allow ~107 bytes).
    root = Path(tempfile.mkdtemp(prefix="outdial-pg-", dir="/tmp" if account else None))
    data, sockets, log = root / "data", root / "sock", root / "server.log"
    started = False
    try:
        sockets.mkdir()
        if account is not None:
            for path in (root, sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
        _run(
            [
                *prefix,
                str(bindir / "initdb"),
                f"--pgdata={data}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=root,
            what="initdb",
        )
        port = 0
        for attempt in range(1, _START_TRIES + 1):
            port = _free_port()
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-c port={port}",
                    f"-c unix_socket_directories={shlex.quote(str(sockets))}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c TimeZone=UTC",
                ]
            )
            try:
                _run(
                    [
                        *prefix,
                        str(bindir / "pg_ctl"),
                        "start",
                        f"--pgdata={data}",
                        f"--log={log}",
                        "--wait",
                        f"--timeout={_TIMEOUT_S}",
                        f"--options={options}",
                    ],
                    cwd=root,
                    what="pg_ctl start",
                )
            except PostgresUnavailable as exc:
                # Another process may have taken the port between probe and bind.
                in_use = "already in use" in _log_tail(log)
                if attempt < _START_TRIES and in_use:
                    continue
                raise PostgresUnavailable(f"{exc}\nserver log:\n{_log_tail(log)}") from exc
            started = True
            break

        createdb = bindir / "createdb"
        if not os.access(createdb, os.X_OK):
            raise PostgresUnavailable(f"{createdb} is missing (PostgreSQL client binaries)")
        _run(
            [str(createdb), "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, DATABASE],
            cwd=root,
            what="createdb",
        )
        yield f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            with contextlib.suppress(PostgresUnavailable):
                _run(
                    [
                        *prefix,
                        str(bindir / "pg_ctl"),
                        "stop",
                        f"--pgdata={data}",
                        "-m",
                        "immediate",
                    ],
                    cwd=root,
                    what="pg_ctl stop",
                )
        shutil.rmtree(root, ignore_errors=True)

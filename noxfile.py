"""Developer sessions: ``nox`` runs tests, lint and typecheck; ``nox -s NAME`` runs one.

Sessions: tests (pytest, posargs passed on), lint (ruff check + ruff format
--check), typecheck (mypy --strict on src/outdial, benchmarks and tests), docs
(mkdocs build --strict into site/), benchmarks (every ``benchmarks/*.py`` script with a ``__main__``
block), demo (``python -m outdial demo``).  Tool versions come from the ``lint``
and ``docs`` extras in pyproject.toml, the same pins CI (.ci/run) uses.
"""

from __future__ import annotations

import re
from pathlib import Path

import nox

ROOT = Path(__file__).parent

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Install ``.[test]`` and run pytest (``nox -s tests -- -n auto -k retry``)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src/outdial, benchmarks and tests (files and settings from
    pyproject.toml)."""
    session.install("-e", ".[test,lint]")
    session.run("mypy", "--strict", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/, failing on any warning."""
    session.install("-e", ".[docs]")
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        "site",
        env={"NO_MKDOCS_2_WARNING": "1"},
    )


def _benchmark_scripts() -> list[Path]:
    main_guard = re.compile(r"""^if __name__ == ["']__main__["']:""", re.MULTILINE)
    return [
        path
        for path in sorted((ROOT / "benchmarks").glob("*.py"))
        if main_guard.search(path.read_text(encoding="utf-8"))
    ]


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Run every benchmarks/*.py script that has a ``__main__`` block, in name order."""
    scripts = _benchmark_scripts()
    if not scripts:
        session.skip("no benchmark scripts with a __main__ block in benchmarks/")
    session.install("-e", ".[test]")
    for script in scripts:
        session.log(f"benchmark: {script.relative_to(ROOT)}")
        session.run("python", str(script), *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The README's first command: install ``.[sql,holidays]`` and run the demo."""
    session.install("-e", ".[sql,holidays]")
    session.run("python", "-m", "outdial", "demo", *session.posargs)

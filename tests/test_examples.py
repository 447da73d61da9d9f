"""The examples run (so they cannot rot), quickly."""

from __future__ import annotations

import asyncio
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def load(name: str) -> dict[str, object]:
    return runpy.run_path(str(EXAMPLES / name), run_name="example")


def test_test_style_example_passes() -> None:
    module = load("test_style.py")
    module["test_busy_number_is_retried_in_business_hours_then_answered"]()  # type: ignore[operator]


def test_forecast_example_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    load("forecast.py")["main"](300)  # type: ignore[operator]
    out = capsys.readouterr().out
    assert "recipients 300" in out and "finished at" in out


def test_service_style_example_completes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    main = load("service_style.py")["main"]
    asyncio.run(main(12))  # type: ignore[operator]
    out = capsys.readouterr().out
    assert "status: active -> completed" in out
    assert "done:" in out


def test_cli_demo_runs_to_completion(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outdial.cli import main

    repo_root = Path(__file__).parent.parent
    monkeypatch.chdir(tmp_path)
    csv = repo_root / "examples" / "recipients.csv"
    assert main(["demo", "--no-progress", "--csv", str(csv), "--db", "memory"]) == 0
    out = capsys.readouterr().out
    assert "completed after" in out
    assert "answer rate" in out
    assert sys.modules["outdial.cli"]

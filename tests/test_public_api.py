"""The public API is exactly ``outdial.__all__``, and every name in it exists."""

from __future__ import annotations

import re
from pathlib import Path

import outdial
from outdial.campaign import TRANSITIONS, mermaid_diagram


def test_every_public_name_exists() -> None:
    for name in outdial.__all__:
        assert hasattr(outdial, name), name


def test_all_is_unique() -> None:
    assert len(set(outdial.__all__)) == len(outdial.__all__)


def test_public_names_are_not_private_modules() -> None:
    public = {n for n in dir(outdial) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if type(getattr(outdial, n)).__name__ == "module"}
    assert set(outdial.__all__) - {"__version__"} <= public
    # everything else visible at top level is a submodule, never an accidental re-export
    assert public - set(outdial.__all__) <= modules


def test_errors_subclass_a_builtin_and_the_root() -> None:
    from outdial import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        if name in ("Problem", "OutdialError"):
            continue
        assert issubclass(cls, errors.OutdialError), name
        assert any(
            issubclass(cls, b) for b in (ValueError, LookupError, RuntimeError, ImportError)
        ), name


def test_lifecycle_doc_shows_the_diagram_drawn_from_the_table() -> None:
    doc = Path(__file__).parent.parent / "docs" / "lifecycle.md"
    block = re.search(r"```mermaid\n(.*?)```", doc.read_text(), re.S)
    assert block is not None
    assert block.group(1).strip() == mermaid_diagram().strip()
    assert len(TRANSITIONS) == mermaid_diagram().count(": ")

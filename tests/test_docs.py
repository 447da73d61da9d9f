"""The documentation's code runs: every ```python block in docs/ and README.md.

Each Markdown file is one test.  Its ```python blocks run in order in one fresh
module namespace (so later blocks see earlier names), with the working directory
set to a temporary directory so the docs may write files.  Blocks fenced with any
other info string (```text, ```bash, ```pycon, ...) are not run.  A failure names
the file, the line its block starts on, and the traceback into the block.
"""

from __future__ import annotations

import linecache
import re
import sys
import traceback
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def doc_files() -> list[Path]:
    """README.md and every Markdown file under docs/, in a stable order."""
    files = sorted((ROOT / "docs").glob("**/*.md"))
    readme = ROOT / "README.md"
    return [readme, *files] if readme.exists() else files


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line of the opening fence, source)`` of each ```python block in ``text``.

    Fences follow CommonMark: three or more backticks or tildes, closed by a run of
    the same character at least as long; a block indented under a list item is
    dedented by its fence's indentation.  An unclosed block runs to the end.
    """
    blocks: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        info = opening["info"].strip()
        language = info.split(maxsplit=1)[0].strip("{}.").lower() if info else ""
        start, body = i + 1, []
        i += 1
        while i < len(lines):
            closing = _FENCE.match(lines[i])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            line = lines[i]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            i += 1
        i += 1  # past the closing fence
        if language == "python":
            blocks.append((start, "\n".join(body) + "\n"))
    return blocks


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_blocks(path: Path, blocks: list[tuple[int, str]]) -> None:
    """Run ``blocks`` in order in one fresh module; fail with file, line, traceback."""
    name = "outdial_docs_" + re.sub(r"\W", "_", path.stem)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # attrs/cattrs/typing resolve names through it
    try:
        for lineno, source in blocks:
            filename = f"{_shown(path)}:{lineno}"
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            try:
                exec(compile(source, filename, "exec"), module.__dict__)
            except Exception as exc:
                frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
                in_block = [
                    f.lineno
                    for f in traceback.extract_tb(exc.__traceback__)
                    if f.filename == filename and f.lineno is not None
                ]
                if isinstance(exc, SyntaxError) and exc.filename == filename and exc.lineno:
                    in_block.append(exc.lineno)
                where = f" (file line {lineno + in_block[-1]})" if in_block else ""
                pytest.fail(
                    f"{_shown(path)}: the python block at line {lineno} failed{where}:\n"
                    + "".join(frames[:1] + frames[2:]),  # drop this runner's frame
                    pytrace=False,
                )
    finally:
        sys.modules.pop(name, None)


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT / "docs")) if path.parent != ROOT else path.name


@pytest.mark.parametrize("path", doc_files(), ids=_doc_id)
def test_doc_code_runs(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    run_blocks(path, python_blocks(path.read_text(encoding="utf-8")))


def test_only_python_fences_are_collected() -> None:
    text = "\n".join(
        [
            "# Title",
            "```python",
            "x = 1",
            "```",
            "```text",
            "not python",
            "```",
            "````python",
            "s = '''",
            "```",
            "'''",
            "````",
            "- item",
            "",
            "  ```python",
            "  if x:",
            "      y = 2",
            "  ```",
            "```bash",
            "pip install outdial",
            "```",
        ]
    )
    assert python_blocks(text) == [
        (2, "x = 1\n"),
        (8, "s = '''\n```\n'''\n"),
        (15, "if x:\n    y = 2\n"),
    ]


def test_a_failing_block_names_file_line_and_error(tmp_path: Path) -> None:
    doc = tmp_path / "page.md"
    with pytest.raises(pytest.fail.Exception) as failure:
        run_blocks(doc, [(3, "a = 1\n"), (7, "b = a\nassert b == 2, 'b is not 2'\n")])
    message = str(failure.value)
    assert f"{doc}:7" in message
    assert "block at line 7 failed (file line 9)" in message
    assert "assert b == 2" in message
    assert "AssertionError: b is not 2" in message


def test_a_syntax_error_names_its_file_line(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception) as failure:
        run_blocks(tmp_path / "page.md", [(4, "x = 1\nif x\n")])
    message = str(failure.value)
    assert "block at line 4 failed (file line 6)" in message
    assert "SyntaxError" in message

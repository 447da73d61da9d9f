"""Engine throughput of another revision, or another interpreter, against the working
tree, interleaved.

Run: ``python benchmarks/ab_engine.py [REV [RECIPIENTS [ROUNDS]]]`` (defaults:
``HEAD``, i.e. what the uncommitted changes do; 20,000 recipients; 5 rounds), or
``python benchmarks/ab_engine.py --python PATH [RECIPIENTS [ROUNDS]]``.

With ``REV``, ``git archive REV src/outdial`` is unpacked in a temporary directory.
Each round runs ``bench_engine.throughput(RECIPIENTS, time.process_time)`` in a
fresh process with that source first on ``PYTHONPATH``, then in a fresh process
with the working tree's. With ``--python PATH``, both sides run the working tree:
one under this interpreter, the other under ``PATH`` (an interpreter or a
virtualenv's ``bin/python`` that can import outdial's dependencies; the working
tree's ``src`` goes first on its ``PYTHONPATH``), to show how much the build of
CPython moves the figure. Prints the CPU time per attempt of each run, the minimum
and median of each side and the ratio of the minimums: on a shared, noisy machine,
only ratios measured in one interleaved run mean much.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_CODE = (
    "import sys, time; sys.path.insert(0, {bench!r}); import bench_engine as b; "
    "r = b.throughput({n}, time.process_time); print(r[2] / r[1] * 1e6)"
)


def _unpack(rev: str, into: Path) -> Path:
    archive = into / "src.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", rev, "src/outdial"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+ / 3.11.4+
            tar.extractall(into, filter="data")
        else:  # our own git archive: nothing to filter out
            tar.extractall(into)
    return into / "src"


def _us_per_attempt(n: int, src: Path | None, python: str = sys.executable) -> float:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    else:
        env.pop("PYTHONPATH", None)
    code = _CODE.format(bench=str(ROOT / "benchmarks"), n=n)
    done = subprocess.run(
        [python, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def _version(python: str) -> str:
    done = subprocess.run(
        [python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def main(argv: list[str]) -> None:
    other_python = None
    if argv and argv[0] == "--python":
        if len(argv) < 2:
            raise SystemExit("--python needs the path of an interpreter")
        other_python, argv = argv[1], argv[2:]
        rev = "HEAD"  # unused: both sides run the working tree
    else:
        rev, argv = (argv[0], argv[1:]) if argv else ("HEAD", [])
    n = int(argv[0]) if argv else 20_000
    rounds = int(argv[1]) if len(argv) > 1 else 5
    if other_python is not None:
        this = f"{sys.executable} ({_version(sys.executable)})"
        other = f"{other_python} ({_version(other_python)})"
        runs: dict[str, list[float]] = {other: [], this: []}
        for _ in range(rounds):
            runs[other].append(_us_per_attempt(n, ROOT / "src", other_python))
            runs[this].append(_us_per_attempt(n, None))
        _report(runs, other, this)
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = _unpack(rev, Path(tmp))
        runs = {rev: [], "working tree": []}
        for _ in range(rounds):
            runs[rev].append(_us_per_attempt(n, src))
            runs["working tree"].append(_us_per_attempt(n, None))
    _report(runs, rev, "working tree")


def _report(runs: dict[str, list[float]], first: str, second: str) -> None:
    for name, values in runs.items():
        print(
            f"{name}: min {min(values):.1f} us/attempt, median {statistics.median(values):.1f} "
            f"({', '.join(f'{v:.1f}' for v in values)})"
        )
    ratio = min(runs[first]) / min(runs[second])
    print(f"ratio of the minimums ({first} / {second}): {ratio:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])

"""Issue 2's figures for the pure core, in one run.

``python benchmarks/core.py`` prints the cost of ``BusinessHours.next_open``
(7-day schedule, 3 slots a day, 20 holidays), of a retry decision, and the ratio
of ``normalize_phone`` to a bare ``phonenumbers.parse`` + ``is_valid_number``
loop over the same 10,000 numbers. Targets: >= 100,000 next_open calls/s;
normalize_phone within 1.2x of bare phonenumbers.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_calendar
import bench_phone
import bench_retry


def run() -> list[tuple[str, str]]:
    return [*bench_calendar.run(), *bench_retry.run(), *bench_phone.run()]


if __name__ == "__main__":
    for label, figure in run():
        print(f"{label}: {figure}")

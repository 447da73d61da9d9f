"""A forecast: 10,000 recipients, 9-17 New York hours, concurrency 20, 3 attempts.

When does it finish, and how many get answered? ``python examples/forecast.py``
(pass a smaller count as the first argument for a quick look).
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta

import structlog

from outdial import BusinessHours, RetryPolicy
from outdial.retry import Fixed
from outdial.simulation import SimulationProfile, simulate

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def main(recipients: int = 10_000) -> None:
    result = simulate(
        recipients,
        business_hours=BusinessHours.weekly("America/New_York", {"mon-fri": [("09:00", "17:00")]}),
        concurrency=20,
        retry_policy=RetryPolicy(max_attempts=3, backoff=Fixed(timedelta(hours=2))),
        profile=SimulationProfile(answer_rate=0.3, voicemail_rate=0.2, busy_rate=0.05),
        rule_set="us-federal",
        seed=42,
    )
    print(result.summary())
    print(f"finished at {result.finished_at:%a %Y-%m-%d %H:%M} UTC")
    busiest = max(result.timeline, key=lambda point: point[1])
    print(f"peak of {busiest[1]} calls in flight first reached at {busiest[0]:%a %H:%M} UTC")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)

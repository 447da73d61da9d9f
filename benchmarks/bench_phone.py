"""How fast phone numbers are normalized, against bare phonenumbers.

``run()`` generates 10,000 valid numbers of several countries (seeded: random
subscriber digits behind each region's example prefix, kept only when
phonenumbers says they are valid), writes each in one of several shapes (E.164,
international with spaces, national with the region, dotted or bracketed), and
times three loops over the same inputs:

- ``normalize_phone(text, region)``;
- bare phonenumbers: ``parse`` + ``is_valid_number`` + ``format_number(E164)``;
- ``parse_phone(text, region)`` (adds region, time zones and US state).

The contract is ``normalize_phone`` within 1.2x of the bare loop.  The loops
are timed in CPU time (``time.process_time``), in turn, several times, and each
one's best run is kept, which is the usual way to take out scheduler noise.
Both of outdial's functions can beat the bare loop: they work out the number's
type once, where ``is_valid_number`` works it out twice for a country code that
several regions share (``+1``, ``+44``...), and compile its patterns once.
Run it as a script: ``python benchmarks/bench_phone.py``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import phonenumbers

from outdial.phone import normalize_phone, parse_phone

__all__ = ["generate_numbers", "run"]

REGIONS = ("US", "CA", "GB", "FR", "IN", "DE", "AU", "BR", "ES", "MX")
TYPES = (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE)
COUNT = 10_000
REPEATS = 5


def generate_numbers(count: int = COUNT, seed: int = 20260301) -> list[tuple[str, str]]:
    """``count`` ``(text, region)`` pairs of valid numbers in assorted written forms."""
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    while len(out) < count:
        region = rng.choice(REGIONS)
        example = phonenumbers.example_number_for_type(region, rng.choice(TYPES))
        if example is None:
            continue
        nsn = phonenumbers.national_significant_number(example)
        keep = rng.randint(2, 4)
        digits = nsn[:keep] + "".join(rng.choice("0123456789") for _ in range(len(nsn) - keep))
        number = phonenumbers.parse(f"+{example.country_code}{digits}", None)
        if not phonenumbers.is_valid_number(number):
            continue
        shape = rng.randrange(5)
        if shape == 0:
            text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        elif shape == 1:
            fmt = phonenumbers.PhoneNumberFormat.INTERNATIONAL
            text = phonenumbers.format_number(number, fmt)
        elif shape == 2:
            text = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        elif shape == 3:
            national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
            text = national.replace(" ", ".").replace("-", ".")
        else:
            text = f"({digits[:3]}) {digits[3:]}" if region in ("US", "CA") else digits
        out.append((text, region))
    return out


def _bare(text: str, region: str) -> str:
    number = phonenumbers.parse(text, region)
    if not phonenumbers.is_valid_number(number):
        raise ValueError(text)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _seconds(fn: Callable[[str, str], object], numbers: Sequence[tuple[str, str]]) -> float:
    start = time.process_time()
    for text, region in numbers:
        fn(text, region)
    return time.process_time() - start


def _best_rates(
    fns: Sequence[Callable[[str, str], object]], numbers: Sequence[tuple[str, str]]
) -> list[float]:
    """Numbers per second of each loop: best of ``REPEATS`` runs, taken in turn.

    Interleaving the loops makes a busy machine slow them all alike, so the
    ratio stays meaningful even when the absolute figures are not.
    """
    best = [float("inf")] * len(fns)
    for _ in range(REPEATS):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], _seconds(fn, numbers))
    return [len(numbers) / seconds for seconds in best]


def run() -> list[tuple[str, str]]:
    """Measure and return ``(label, value)`` rows."""
    numbers = generate_numbers()
    # Same answers first: the comparison is only fair if both loops do the same job.
    for text, region in numbers[:500]:
        assert normalize_phone(text, region) == _bare(text, region), text
    bare, ours, info = _best_rates((_bare, normalize_phone, parse_phone), numbers)
    return [
        ("numbers", f"{len(numbers)} ({', '.join(REGIONS)})"),
        ("normalize_phone numbers/s", f"{ours:,.0f}"),
        ("bare phonenumbers numbers/s", f"{bare:,.0f}"),
        ("ratio normalize_phone / bare (time)", f"{bare / ours:.3f}x"),
        ("parse_phone with zones numbers/s", f"{info:,.0f}"),
        ("ratio parse_phone / bare (time)", f"{bare / info:.3f}x"),
    ]


if __name__ == "__main__":
    for label, value in run():
        print(f"{label:40s} {value}")

"""The HMAC and constant-time helpers every webhook scheme uses (written once).

Each provider's scheme (what is signed, which header, which encoding) lives in
its own module; this module only knows how to compute a MAC, compare two
values in constant time, split ``k=v,k=v`` signature headers and check a
signed timestamp against a tolerance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from datetime import datetime, timedelta, timezone

from outdial._time import require_aware
from outdial.errors import ConfigurationError, WebhookVerificationError

__all__ = [
    "HASHES",
    "base64_matches",
    "check_fresh",
    "epoch_instant",
    "hex_matches",
    "hmac_digest",
    "same",
    "signature_params",
]

_UTC = timezone.utc

#: HMAC algorithms accepted by name.
HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def hmac_digest(key: str | bytes, message: bytes, algorithm: str = "sha256") -> bytes:
    """The raw HMAC of ``message`` under ``key`` (str keys are UTF-8 encoded)."""
    try:
        digestmod = HASHES[algorithm.lower()]
    except KeyError:
        raise ConfigurationError(
            "algorithm", algorithm, f"is not one of {', '.join(sorted(HASHES))}"
        ) from None
    return hmac.new(key.encode() if isinstance(key, str) else key, message, digestmod).digest()


def same(expected: str | bytes, given: str | bytes) -> bool:
    """Constant-time equality of two values (str is compared as UTF-8 bytes)."""
    a = expected.encode() if isinstance(expected, str) else expected
    b = given.encode() if isinstance(given, str) else given
    return hmac.compare_digest(a, b)


def hex_matches(digest: bytes, given: str) -> bool:
    """Whether ``given`` is the hex of ``digest`` (case-insensitive, constant time)."""
    return same(digest.hex(), given.strip().lower())


def base64_matches(digest: bytes, given: str) -> bool:
    """Whether ``given`` is the base64 of ``digest`` (constant time on the bytes)."""
    try:
        decoded = base64.b64decode(given.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return same(digest, decoded)


def signature_params(provider: str, header: str) -> dict[str, list[str]]:
    """Split a ``k=v,k=v`` signature header; a key may repeat (key rotation).

    Raises :class:`WebhookVerificationError` when a part is not ``k=v``.
    """
    params: dict[str, list[str]] = {}
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or not name:
            raise WebhookVerificationError(provider, f"malformed signature header part {part!r}")
        params.setdefault(name.strip(), []).append(value.strip())
    return params


def epoch_instant(provider: str, text: str, *, unit: str = "auto") -> datetime:
    """An epoch timestamp as an aware UTC instant.

    ``unit`` is ``"s"``, ``"ms"`` or ``"auto"`` (values above 10^11 are
    milliseconds: that is the year 5138 in seconds). Unreadable text raises
    :class:`WebhookVerificationError`.
    """
    try:
        value = float(text.strip())
    except (ValueError, AttributeError):
        raise WebhookVerificationError(provider, f"timestamp {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise WebhookVerificationError(provider, f"timestamp {text!r} is out of range")
    if unit == "ms" or (unit == "auto" and value > 1e11):
        value /= 1000.0
    try:
        return datetime.fromtimestamp(value, _UTC)
    except (OverflowError, OSError, ValueError):
        raise WebhookVerificationError(provider, f"timestamp {text!r} is out of range") from None


def check_fresh(provider: str, signed_at: datetime, now: datetime, tolerance: timedelta) -> None:
    """Refuse a signature made more than ``tolerance`` before or after ``now``."""
    require_aware(now, "now")
    skew = now - signed_at
    if abs(skew) > tolerance:
        direction = "old" if skew > timedelta(0) else "in the future"
        raise WebhookVerificationError(
            provider,
            f"signature timestamp is {abs(skew).total_seconds():.0f} s {direction} "
            f"(tolerance {tolerance.total_seconds():.0f} s): stale or replayed",
        )

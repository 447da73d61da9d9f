"""Small helpers for instants. Every instant the library handles is aware."""

from __future__ import annotations

from datetime import datetime, timezone

from outdial.errors import NaiveDatetimeError

UTC = timezone.utc


def require_aware(value: datetime, where: str = "") -> datetime:
    """Return ``value`` unchanged if it is aware, else raise ``NaiveDatetimeError``."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise NaiveDatetimeError(value, where)
    return value


def to_utc(value: datetime, where: str = "") -> datetime:
    """The same instant expressed in UTC (refusing naive datetimes)."""
    return require_aware(value, where).astimezone(UTC)

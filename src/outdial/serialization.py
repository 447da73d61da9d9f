"""JSON in and out, at the edges only (cattrs).

One converter knows every outdial value: instants are ISO 8601 strings in UTC,
durations are seconds, enums their values, business hours the seeds'
``business_hours_config`` shape and retry policies their documented dict shape.

>>> from outdial.serialization import to_json, from_json
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Any, TypeVar, get_origin

import cattrs

from outdial._time import to_utc
from outdial.calendar import BusinessHours
from outdial.errors import ConfigurationError
from outdial.retry import RetryPolicy

__all__ = ["converter", "from_json", "structure", "to_json", "unstructure"]

T = TypeVar("T")

converter = cattrs.Converter()


def _dt_out(value: datetime) -> str:
    return to_utc(value).isoformat().replace("+00:00", "Z")


def _dt_in(value: Any, _: Any) -> datetime:
    if isinstance(value, datetime):
        return to_utc(value)
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError("", value, "is not an ISO 8601 instant") from None
    return to_utc(parsed)


converter.register_unstructure_hook_func(
    lambda t: isinstance(t, type) and issubclass(t, enum.Enum), lambda e: e.value
)
converter.register_unstructure_hook(datetime, _dt_out)
converter.register_structure_hook(datetime, _dt_in)
converter.register_unstructure_hook(date, lambda d: d.isoformat())
converter.register_structure_hook(date, lambda v, _: date.fromisoformat(str(v)))
converter.register_unstructure_hook(timedelta, lambda d: d.total_seconds())
converter.register_structure_hook(timedelta, lambda v, _: timedelta(seconds=float(v)))
converter.register_unstructure_hook(
    MappingProxyType, lambda m: {k: converter.unstructure(v) for k, v in m.items()}
)
converter.register_unstructure_hook(BusinessHours, lambda b: b.to_dict())
converter.register_structure_hook(BusinessHours, lambda v, _: BusinessHours.from_dict(v))
converter.register_unstructure_hook(RetryPolicy, lambda p: p.to_dict())
converter.register_structure_hook(RetryPolicy, lambda v, _: RetryPolicy.from_dict(v))


def _is_mapping(t: Any) -> bool:
    return bool(t is Mapping or get_origin(t) is Mapping)


converter.register_structure_hook_func(
    _is_mapping,
    lambda v, _: MappingProxyType({str(k): x for k, x in (v or {}).items()}),
)


def unstructure(value: Any) -> Any:
    """Plain JSON-ready data for any outdial value."""
    return converter.unstructure(value)


def structure(data: Any, cls: type[T]) -> T:
    """An outdial value of type ``cls`` from plain data."""
    return converter.structure(data, cls)


def to_json(value: Any, **kwargs: Any) -> str:
    return json.dumps(unstructure(value), **kwargs)


def from_json(text: str | bytes, cls: type[T]) -> T:
    return structure(json.loads(text), cls)

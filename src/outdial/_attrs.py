"""A fast ``attrs.evolve`` for the engine's hot path.

``attrs.evolve`` re-runs ``__init__`` (converters, validators) and looks every
field up by introspection; for the few value types the dialer copies on every
call (recipients, attempts, counters) that dominated the profile. :func:`replace`
copies the slots directly. Use it only with values of the right type: it skips
converters and validators on purpose.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs

T = TypeVar("T")

_FIELDS: dict[type, tuple[tuple[str, ...], frozenset[str]]] = {}
_new = object.__new__
_set = object.__setattr__


def replace(inst: T, **changes: Any) -> T:
    """A copy of the frozen attrs instance ``inst`` with ``changes`` applied."""
    cls = type(inst)
    known = _FIELDS.get(cls)
    if known is None:
        names = tuple(a.name for a in attrs.fields(cls))  # type: ignore[arg-type]
        known = _FIELDS[cls] = (names, frozenset(names))
    names, name_set = known
    if not name_set.issuperset(changes):
        unknown = sorted(set(changes) - name_set)
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    new: T = _new(cls)
    for name in names:
        _set(new, name, changes[name] if name in changes else getattr(inst, name))
    return new

"""A fast ``attrs.evolve`` for the engine's hot path.

``attrs.evolve`` re-runs ``__init__`` (converters, validators) and looks every
field up by introspection; for the few value types the dialer copies on every
call (recipients, attempts, counters, campaigns) that dominated the profile.
:func:`replace` copies the slots directly with a function generated once per
class. Use it only with values of the right type: it skips converters and
validators on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

T = TypeVar("T")

_COPIERS: dict[type, Callable[[Any, dict[str, Any]], Any]] = {}


def _copier(cls: type) -> Callable[[Any, dict[str, Any]], Any]:
    names = [a.name for a in attrs.fields(cls)]
    lines = [
        "def copy(inst, changes):",
        "    new = new_(cls)",
        *(f"    set_(new, {name!r}, inst.{name})" for name in names),
        "    if changes:",
        "        if not known.issuperset(changes):",
        "            raise TypeError(f'{cls.__name__} has no field(s) '",
        "                            + ', '.join(sorted(set(changes) - known)))",
        "        for key, value in changes.items():",
        "            set_(new, key, value)",
        "    return new",
    ]
    namespace: dict[str, Any] = {
        "cls": cls,
        "known": frozenset(names),
        "new_": object.__new__,
        "set_": object.__setattr__,
    }
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from attrs field names only
    copier: Callable[[Any, dict[str, Any]], Any] = namespace["copy"]
    return copier


def replace(inst: T, **changes: Any) -> T:
    """A copy of the frozen attrs instance ``inst`` with ``changes`` applied."""
    cls = type(inst)
    copier = _COPIERS.get(cls)
    if copier is None:
        copier = _COPIERS[cls] = _copier(cls)
    new: T = copier(inst, changes)
    return new

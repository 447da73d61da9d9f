"""A fast ``attrs.evolve`` for the engine's hot path.

``attrs.evolve`` re-runs ``__init__`` (converters, validators) and looks every
field up by introspection; for the few value types the dialer copies on every
call (recipients, attempts, campaigns) that dominated the profile.
:func:`replace` copies the slots directly with a function generated once per
class and set of changed field names: every slot is written through its
member descriptor, unchanged ones from the instance and changed ones from the
keyword arguments. :func:`copier` gives the same copy as a function of
positional values, for call sites that always change the same fields. Use them
only with values of the right type: they skip converters and validators on
purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MemberDescriptorType
from typing import Any, TypeVar

import attrs

T = TypeVar("T")

_Copier = Callable[[Any, dict[str, Any]], Any]

#: (class, names of the changed fields in call order) -> generated copier
_COPIERS: dict[tuple[type, tuple[str, ...]], _Copier] = {}
_MAX_COPIERS = 4096  # distinct (class, changed names) pairs; far more than the code uses


def _generate(cls: type, changed: tuple[str, ...], *, positional: bool) -> Callable[..., Any]:
    """``copy(inst, changes)`` (or ``copy(inst, *values)`` in ``changed`` order when
    ``positional``) writing every slot of a new ``cls`` instance."""
    names = [a.name for a in attrs.fields(cls)]
    unknown = set(changed) - set(names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) " + ", ".join(sorted(unknown)))
    namespace: dict[str, Any] = {"cls": cls, "new_": object.__new__}
    params = [f"v_{i}" for i in range(len(changed))] if positional else ["changes"]
    lines = [f"def copy(inst, {', '.join(params)}):", "    new = new_(cls)"]
    for i, name in enumerate(names):
        setter = f"set_{i}"
        namespace[setter] = _slot_setter(cls, name)
        if name not in changed:
            value = f"inst.{name}"
        elif positional:
            value = f"v_{changed.index(name)}"
        else:
            value = f"changes[{name!r}]"
        lines.append(f"    {setter}(new, {value})")
    lines.append("    return new")
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from attrs field names only
    copy: Callable[..., Any] = namespace["copy"]
    return copy


def _copier(cls: type, changed: tuple[str, ...]) -> _Copier:
    return _generate(cls, changed, positional=False)


def copier(cls: type[T], *names: str) -> Callable[..., T]:
    """A function ``copy(inst, *values)``: :func:`replace` with the fields ``names``
    set to ``values`` (in that order), for call sites that always change the same
    fields (no keyword dict, no cache look-up). ``TypeError`` for unknown names."""
    if len(set(names)) != len(names):
        raise TypeError(f"{cls.__name__}: a field is named twice in {names}")
    return _generate(cls, names, positional=True)


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The slot's own ``__set__`` (bypasses the frozen ``__setattr__``)."""
    for klass in cls.__mro__:
        descriptor = klass.__dict__.get(name)
        if isinstance(descriptor, MemberDescriptorType):
            setter: Callable[[Any, Any], None] = descriptor.__set__
            return setter
    # not a slotted class: fall back on the generic (slower) path
    return lambda obj, value: object.__setattr__(obj, name, value)


def replace(inst: T, **changes: Any) -> T:
    """A copy of the frozen attrs instance ``inst`` with ``changes`` applied.

    ``TypeError`` naming the fields for keywords that are not fields of ``inst``.
    """
    key = (type(inst), tuple(changes))
    copier = _COPIERS.get(key)
    if copier is None:
        copier = _copier(key[0], key[1])
        if len(_COPIERS) >= _MAX_COPIERS:
            _COPIERS.clear()
        _COPIERS[key] = copier
    new: T = copier(inst, changes)
    return new

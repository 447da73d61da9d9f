"""A fast ``attrs.evolve`` (and constructor) for the engine's hot path.

``attrs.evolve`` re-runs ``__init__`` (converters, validators) and looks every
field up by introspection; for the few value types the dialer copies on every
call (recipients, attempts, campaigns) that dominated the profile.
:func:`replace` copies the fields with a function generated once per class and
set of changed field names: unchanged ones from the instance, changed ones from
the keyword arguments. :func:`copier` gives the same copy as a function of
positional values, for call sites that always change the same fields, and
:func:`maker` a constructor of positional values for values built on every
call. Use them only with values of the right type: they skip converters,
validators and ``__attrs_post_init__`` on purpose.

How a copy writes the fields of a frozen class
----------------------------------------------
A frozen class's ``__setattr__`` raises, so a copy cannot simply assign. Each
class gets a *twin*: a subclass that adds no slot (same memory layout, same
``__weakref__``/``__dict__``) and restores plain ``object.__setattr__``. A copy
creates the new value as a twin, assigns every field with ordinary attribute
stores (``new.x = ...``, which CPython 3.11+ specialises into a direct slot
write: about 3x cheaper than calling each slot's member descriptor), then sets
``new.__class__ = cls``. This is correct because:

- the value is created, filled and switched inside the generated function: no
  other code can see it before its class is ``cls`` (on an exception the
  half-built twin is dropped, reachable at most from the traceback);
- every field is written, exactly as ``attrs.evolve`` would (the twin's attribute
  stores go to ``cls``'s own slot descriptors: the twin adds none);
- frozen-ness is ``cls.__setattr__``/``__delattr__``, untouched: once switched, the
  value refuses assignment like any other instance of ``cls``, and ``type()``,
  equality, hashing, ``repr``, pickling and ``attrs.evolve`` see a plain ``cls``.

Whether the interpreter allows the switch is checked once per class, when its
twin is made: a probe is created as a twin, every field is assigned, the class
is switched and the fields are read back through ``cls``. A class that refuses
(a metaclass or ``__init_subclass__`` that rejects the subclass, a metaclass
with its own ``__call__``, an interpreter with other layout rules) gets the
previous copier instead, which writes each slot through its member
descriptor's ``__set__``: slower, same result.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MemberDescriptorType
from typing import Any, TypeVar

import attrs

from outdial._memo import Memo

__all__ = ["copier", "maker", "replace", "twin_of"]

T = TypeVar("T")

_Copier = Callable[[Any, dict[str, Any]], Any]


#: class -> its twin, or None when the class refused the probe (see the module doc).
#: A twin depends only on its class, which cannot change layout once created, so
#: an entry never goes stale.
_TWINS: dict[type, type | None] = {}


def twin_of(cls: type) -> type | None:
    """The twin of ``cls`` (a subclass with the same layout and plain attribute
    assignment, see the module doc), made and probed on first use; ``None`` when
    switching a twin's instance to ``cls`` does not work for this class."""
    try:
        return _TWINS[cls]
    except KeyError:
        pass
    twin = _make_twin(cls)
    return _TWINS.setdefault(cls, twin)


def _make_twin(cls: type) -> type | None:
    if type(cls).__call__ is not type.__call__:
        return None  # a metaclass that intercepts instantiation: ``twin()`` would run it
    names = [a.name for a in attrs.fields(cls)]
    try:
        twin: type = type(cls)(
            cls.__name__,
            (cls,),
            {
                "__slots__": (),
                "__module__": cls.__module__,
                "__qualname__": f"{cls.__qualname__}.<copy twin>",
                "__doc__": "Instances exist only inside outdial._attrs copies.",
                # plain construction (``twin()`` is object.__new__ + object.__init__,
                # cheaper to call than ``object.__new__(twin)``) and plain assignment
                "__new__": object.__new__,
                "__init__": object.__init__,
                "__setattr__": object.__setattr__,
                "__delattr__": object.__delattr__,
            },
        )
        probe: Any = twin()
        marks = {name: object() for name in names}
        for name, mark in marks.items():
            setattr(probe, name, mark)
        probe.__class__ = cls
    except Exception:  # any refusal (subclassing or switching): take the slower copier
        return None
    same_layout = (
        twin.__basicsize__ == cls.__basicsize__
        and twin.__dictoffset__ == cls.__dictoffset__
        and twin.__weakrefoffset__ == cls.__weakrefoffset__
    )
    read_back = all(getattr(probe, n) is m for n, m in marks.items())
    if type(probe) is not cls or not same_layout or not read_back:
        return None
    return twin


def _fields(cls: type, changed: tuple[str, ...]) -> tuple[attrs.Attribute[Any], ...]:
    """``cls``'s fields; ``TypeError`` unless ``changed`` names distinct fields."""
    fields: tuple[attrs.Attribute[Any], ...] = attrs.fields(cls)
    names = [a.name for a in fields]
    unknown = set(changed) - set(names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) " + ", ".join(sorted(unknown)))
    if len(set(changed)) != len(changed):
        raise TypeError(f"{cls.__name__}: a field is named twice in {changed}")
    return fields


def _compile(name: str, lines: list[str], namespace: dict[str, Any]) -> Callable[..., Any]:
    exec("\n".join(lines), namespace)  # noqa: S102 - generated from attrs field names only
    function: Callable[..., Any] = namespace[name]
    return function


def _assignments(
    cls: type, values: dict[str, str], namespace: dict[str, Any], *, twin: bool
) -> list[str]:
    """Lines creating ``new`` and writing each field ``name`` from the expression
    ``values[name]``: attribute stores on a twin, or each slot's descriptor."""
    tw = twin_of(cls) if twin else None
    namespace.update(cls=cls, twin=tw, new_=object.__new__)
    if tw is not None:
        lines = ["    new = twin()"]
        lines += [f"    new.{name} = {value}" for name, value in values.items()]
        return [*lines, "    new.__class__ = cls"]
    lines = ["    new = new_(cls)"]
    for i, (name, value) in enumerate(values.items()):
        namespace[f"set_{i}"] = _slot_setter(cls, name)
        lines.append(f"    set_{i}(new, {value})")
    return lines


def _generate(
    cls: type, changed: tuple[str, ...], *, positional: bool, twin: bool = True
) -> Callable[..., Any]:
    """``copy(inst, changes)`` (or ``copy(inst, *values)`` in ``changed`` order when
    ``positional``) writing every field of a new ``cls`` instance; ``twin=False``
    forces the descriptor copier (the fallback, also used by the tests)."""
    names = [a.name for a in _fields(cls, changed)]
    params = [f"v_{i}" for i in range(len(changed))] if positional else ["changes"]
    values = {}
    for name in names:
        if name not in changed:
            values[name] = f"inst.{name}"
        elif positional:
            values[name] = f"v_{changed.index(name)}"
        else:
            values[name] = f"changes[{name!r}]"
    namespace: dict[str, Any] = {}
    lines = [f"def copy(inst, {', '.join(params)}):"]
    lines += _assignments(cls, values, namespace, twin=twin)
    return _compile("copy", [*lines, "    return new"], namespace)


def _copier(key: tuple[type, tuple[str, ...]]) -> _Copier:
    return _generate(key[0], key[1], positional=False)


#: (class, names of the changed fields in call order) -> generated copier; at most 4,096
#: distinct pairs, far more than the code uses
_COPIERS: Memo[tuple[type, tuple[str, ...]], _Copier] = Memo(_copier, 4096)


def copier(cls: type[T], *names: str) -> Callable[..., T]:
    """A function ``copy(inst, *values)``: :func:`replace` with the fields ``names``
    set to ``values`` (in that order), for call sites that always change the same
    fields (no keyword dict, no cache look-up). ``TypeError`` for unknown names."""
    return _generate(cls, names, positional=True)


def maker(cls: type[T], *names: str) -> Callable[..., T]:
    """A constructor ``make(*values)`` of ``cls`` with the fields ``names`` set to
    ``values`` (in that order) and every other field to its default, for values
    built on every call: the same instance as ``cls(**dict(zip(names, values)))``
    when the values are of the right type, without ``__init__``'s per-field
    ``object.__setattr__`` calls (see the module doc).

    Like :func:`copier` it runs no converter or validator; ``TypeError`` for unknown
    or repeated names, for a field left out that has no default, a converter or a
    factory taking ``self``, and for a class with ``__attrs_pre_init__`` or
    ``__attrs_post_init__`` (a constructor that skipped them would break the
    class's own checks)."""
    fields = _fields(cls, names)
    for hook in ("__attrs_pre_init__", "__attrs_post_init__"):
        if hasattr(cls, hook):
            raise TypeError(f"{cls.__name__} has {hook}: build it with its constructor")
    namespace: dict[str, Any] = {}
    values: dict[str, str] = {}
    for i, field in enumerate(fields):
        default: Any = field.default
        if field.name in names:
            values[field.name] = f"v_{names.index(field.name)}"
        elif field.converter is not None:
            raise TypeError(f"{cls.__name__}.{field.name} converts its default: name it")
        elif isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            if default.takes_self:
                raise TypeError(f"{cls.__name__}.{field.name}: a factory taking self")
            namespace[f"factory_{i}"] = default.factory
            values[field.name] = f"factory_{i}()"
        elif default is attrs.NOTHING:
            raise TypeError(f"{cls.__name__}.{field.name} has no default: name it")
        else:
            namespace[f"default_{i}"] = default
            values[field.name] = f"default_{i}"
    params = ", ".join(f"v_{i}" for i in range(len(names)))
    lines = [f"def make({params}):", *_assignments(cls, values, namespace, twin=True)]
    return _compile("make", [*lines, "    return new"], namespace)


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
    new: T = _COPIERS[type(inst), tuple(changes)](inst, changes)
    return new

"""Prompt and greeting templates with ``{placeholder}`` fields.

Placeholders name recipient fields (``{first_name}``, ``{company}``...), any
imported CSV column (``{due_date}``) or a campaign prompt variable. Unknown
placeholders are found at finalize by :func:`placeholders`, never at dial time.
Literal braces are written ``{{`` and ``}}``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

from outdial.errors import ConfigurationError

__all__ = ["STANDARD_FIELDS", "placeholders", "render"]

#: Placeholders every recipient can fill (possibly with an empty string).
STANDARD_FIELDS = frozenset(
    {"first_name", "last_name", "name", "email", "company", "phone", "phone_number"}
)

_FORMATTER = string.Formatter()


def placeholders(template: str, field: str = "template") -> set[str]:
    """The placeholder names used in ``template``.

    A malformed template (unbalanced brace, attribute or index access,
    conversion) raises :class:`ConfigurationError` naming ``field``.
    """
    names: set[str] = set()
    try:
        for _literal, name, spec, conversion in _FORMATTER.parse(template):
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise ConfigurationError(
                    field, template, f"has an unsupported placeholder {{{name}}}"
                )
            names.add(name)
    except ValueError as exc:
        raise ConfigurationError(field, template, f"is not a valid template ({exc})") from None
    return names


def render(template: str, variables: Mapping[str, str]) -> str:
    """``template`` with every placeholder replaced (missing ones become '')."""
    out: list[str] = []
    for literal, name, _spec, _conv in _FORMATTER.parse(template):
        out.append(literal)
        if name is not None:
            out.append(str(variables.get(name, "")))
    return "".join(out)

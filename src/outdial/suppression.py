"""Do-not-call (suppression) lists.

A :class:`SuppressionList` is a frozen set of E.164 numbers that must never be
dialled: the workspace's own do-not-call list (opt-outs are added at once, not
after the 10 business days the TCPA allows), a national registry scrub the user
supplies, or numbers in a cooling-off period such as France's 60 days of silence
after a refusal (whoever keeps the list removes them when the period ends).

Entries are normalized with :func:`outdial.phone.normalize_phone` on the way in,
so ``"(212) 867-5309"`` with region ``"US"`` and ``"+1 212 867 5309"`` are the same
entry. A bad entry raises :class:`~outdial.errors.InvalidPhoneNumber` whose
``row`` is the entry's 0-based index in the iterable that was given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

from outdial.errors import InvalidPhoneNumber
from outdial.phone import normalize_phone

__all__ = ["SuppressionList"]


@attrs.frozen(init=False)
class SuppressionList:
    """An immutable do-not-call list; membership is by E.164 number.

    ``number in dnc`` is a set lookup for E.164 text. Other text (``"(212)
    867-5309"``) is normalized with the list's ``default_region`` first, and text
    that cannot be normalized raises :class:`InvalidPhoneNumber` rather than
    answering ``False`` for a number that might be on the list.
    :meth:`add` and :meth:`with_numbers` return new lists.
    """

    _numbers: frozenset[str]
    default_region: str | None

    def __init__(self, numbers: Iterable[str] = (), default_region: str | None = None) -> None:
        self.__attrs_init__(_normalize_all(numbers, default_region), default_region)

    @property
    def numbers(self) -> frozenset[str]:
        """The E.164 numbers on the list."""
        return self._numbers

    def add(self, number: str) -> SuppressionList:
        """A list that also holds ``number`` (normalized)."""
        return self.with_numbers((number,))

    def with_numbers(self, numbers: Iterable[str]) -> SuppressionList:
        """A list that also holds ``numbers`` (normalized; ``row`` of an error is its index)."""
        added = _normalize_all(numbers, self.default_region)
        if added <= self._numbers:
            return self
        return self._of(self._numbers | added, self.default_region)

    @classmethod
    def _of(cls, numbers: frozenset[str], default_region: str | None) -> SuppressionList:
        """A list of already normalized numbers (no second normalization)."""
        new = cls.__new__(cls)
        new.__attrs_init__(numbers, default_region)
        return new

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, str):
            return False
        if number in self._numbers:
            return True
        if number.startswith("+") and number[1:].isdigit():
            return False  # already E.164 and not on the list
        return normalize_phone(number, self.default_region) in self._numbers

    def __len__(self) -> int:
        return len(self._numbers)

    def __iter__(self) -> Iterator[str]:
        """The numbers in sorted order (a stable order for exports and tests)."""
        return iter(sorted(self._numbers))


def _normalize_all(numbers: Iterable[str], default_region: str | None) -> frozenset[str]:
    if isinstance(numbers, str):
        raise TypeError("numbers must be an iterable of numbers, not a single string")
    out: set[str] = set()
    for index, text in enumerate(numbers):
        if not isinstance(text, str):
            raise InvalidPhoneNumber(repr(text), "not text", row=index)
        try:
            out.add(normalize_phone(text, default_region))
        except InvalidPhoneNumber as exc:
            raise InvalidPhoneNumber(exc.text, exc.reason, row=index) from None
    return frozenset(out)

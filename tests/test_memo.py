"""The bounded memo table behind the module-level caches (outdial._memo)."""

from __future__ import annotations

from outdial._memo import Memo


def test_an_entry_is_made_once_from_its_key_and_then_looked_up() -> None:
    made: list[int] = []

    def square(key: int) -> int:
        made.append(key)
        return key * key

    table = Memo(square)
    assert table[3] == 9 and table[3] == 9 and table[4] == 16
    assert made == [3, 4]
    assert table.get(5) is None and 5 not in table  # only a subscript makes an entry


def test_a_full_table_is_emptied_before_the_next_entry_is_made() -> None:
    table = Memo(str, limit=3)
    for key in range(3):
        assert table[key] == str(key)
    assert len(table) == 3
    assert table[1] == "1" and len(table) == 3  # a hit changes nothing
    assert table[9] == "9"
    assert dict(table) == {9: "9"}  # emptied, then the new entry

"""Do-not-call lists."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial.errors import InvalidPhoneNumber
from outdial.suppression import SuppressionList


def test_numbers_on_the_list_are_members_by_e164() -> None:
    dnc = SuppressionList(["+1 (212) 867-5309", "09876543210"], default_region="IN")
    assert "+12128675309" in dnc
    assert "+919876543210" in dnc
    assert "+12128675310" not in dnc
    assert len(dnc) == 2


def test_entries_are_normalized_so_duplicates_collapse() -> None:
    dnc = SuppressionList(["+1 212 867 5309", "(212) 867-5309", "212.867.5309"], "US")
    assert list(dnc) == ["+12128675309"]


def test_other_written_forms_are_found_through_normalization() -> None:
    dnc = SuppressionList(["+12128675309"], default_region="US")
    assert "(212) 867-5309" in dnc
    assert "001 212 867 5309" in dnc
    assert "(212) 867-5310" not in dnc


def test_membership_of_unparseable_text_raises_instead_of_answering_no() -> None:
    dnc = SuppressionList(["+12128675309"])
    with pytest.raises(InvalidPhoneNumber, match="no country code and no default region"):
        _ = "(212) 867-5309" in dnc


def test_non_string_is_never_a_member() -> None:
    dnc = SuppressionList(["+12128675309"])
    assert 12128675309 not in dnc
    assert None not in dnc


def test_invalid_entry_names_its_index() -> None:
    with pytest.raises(InvalidPhoneNumber) as info:
        SuppressionList(["+12128675309", "+919876543210", "+1 555 010 0000"])
    assert info.value.row == 2
    assert info.value.text == "+1 555 010 0000"
    assert info.value.reason == "not a valid number for region US"
    assert str(info.value).startswith("row 2: ")


def test_non_text_entry_is_refused_with_its_index() -> None:
    with pytest.raises(InvalidPhoneNumber) as info:
        SuppressionList(["+12128675309", 2128675309])  # type: ignore[list-item]
    assert info.value.row == 1
    assert info.value.reason == "not text"


def test_a_single_string_is_not_taken_for_a_list_of_digits() -> None:
    with pytest.raises(TypeError):
        SuppressionList("+12128675309")


def test_add_returns_a_new_list_and_leaves_the_old_one_alone() -> None:
    empty = SuppressionList(default_region="GB")
    one = empty.add("020 7946 0958")
    assert "+442079460958" in one
    assert "+442079460958" not in empty
    assert len(empty) == 0
    assert one.default_region == "GB"


def test_with_numbers_reports_the_index_within_the_new_numbers() -> None:
    dnc = SuppressionList(["+12128675309"])
    with pytest.raises(InvalidPhoneNumber) as info:
        dnc.with_numbers(["+33142685300", "not a phone"])
    assert info.value.row == 1
    assert len(dnc) == 1


def test_adding_a_number_already_there_gives_an_equal_list() -> None:
    dnc = SuppressionList(["+12128675309"])
    assert dnc.add("+1 212 867 5309") == dnc
    assert dnc.with_numbers(["+33142685300"]) != dnc


def test_lists_are_frozen() -> None:
    dnc = SuppressionList(["+12128675309"])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        dnc.default_region = "US"  # type: ignore[misc]


def test_iteration_is_sorted() -> None:
    dnc = SuppressionList(["+919876543210", "+12128675309", "+442079460958"])
    assert list(dnc) == ["+12128675309", "+442079460958", "+919876543210"]
    assert dnc.numbers == frozenset(dnc)


_POOL = ["+12128675309", "+919876543210", "+442079460958", "+33142685300", "+13053725000"]


@settings(max_examples=50, deadline=None)
@given(first=st.lists(st.sampled_from(_POOL)), second=st.lists(st.sampled_from(_POOL)))
def test_with_numbers_is_set_union(first: list[str], second: list[str]) -> None:
    combined = SuppressionList(first).with_numbers(second)
    assert set(combined) == set(first) | set(second)
    assert combined == SuppressionList(first + second)
    for number in _POOL:
        assert (number in combined) == (number in first or number in second)

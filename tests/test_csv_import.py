"""CSV import and export of recipients (outdial.csv_import)."""

from __future__ import annotations

import codecs
import csv
import io
import json
import random
import tracemalloc
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial import csv_import
from outdial.csv_import import (
    FIELD_ALIASES,
    PHONE_ALIASES,
    ImportReport,
    ParsedRow,
    RowProblem,
    export_recipients_csv,
    import_recipients_csv,
    read_recipients_csv,
)
from outdial.errors import (
    ConfigurationError,
    CsvDecodeError,
    CsvImportError,
    MissingPhoneColumn,
    NaiveDatetimeError,
    RowLimitExceeded,
)
from outdial.outcomes import CallOutcome
from outdial.recipient import Recipient, RecipientStatus

NOW = datetime(2026, 7, 1, 14, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parent.parent

# Valid numbers (checked in test_sample_numbers_are_valid) and their E.164 forms.
NY = "+12125550134"
SF = "+14155550199"
CHI = "+13125550142"
MUMBAI = "+919876543210"
LONDON = "+447911123456"


class FakeStore:
    """Keeps recipients the way ``UnitOfWork.add_recipients`` does: a phone the
    campaign already has is skipped, and the count of inserted ones is returned."""

    def __init__(self, phones: Iterable[str] = ()) -> None:
        self.phones = set(phones)
        self.recipients: list[Recipient] = []
        self.batches: list[int] = []

    def add_batch(self, batch: Sequence[Recipient]) -> int:
        self.batches.append(len(batch))
        new = [r for r in batch if r.phone not in self.phones]
        self.phones.update(r.phone for r in new)
        self.recipients.extend(new)
        return len(new)

    def by_phone(self, phone: str) -> Recipient:
        (found,) = [r for r in self.recipients if r.phone == phone]
        return found


def run_import(source: Any, store: FakeStore | None = None, **options: Any) -> ImportReport:
    store = FakeStore() if store is None else store
    ids = iter(range(1, 10**9))
    options.setdefault("default_region", "US")
    return import_recipients_csv(
        source,
        campaign_id="c1",
        workspace_id="w1",
        now=NOW,
        add_batch=store.add_batch,
        new_id=lambda: f"r{next(ids)}",
        **options,
    )


def csv_text(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


def test_sample_numbers_are_valid() -> None:
    for number in (NY, SF, CHI, MUMBAI, LONDON):
        assert phonenumbers.is_valid_number(phonenumbers.parse(number, None)), number


# -- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "phone_number",
        "Phone",
        "PhoneNumber",
        "mobile",
        "Phone Number",
        "PHONE-NUMBER",
        "phone.number",
        " Mobile No ",
        "Mobile No.",
        "contact number",
        "mobile_number",
        "Tel",
        "Telephone",
    ],
)
def test_phone_header_aliases_match_ignoring_case_spaces_and_punctuation(header: str) -> None:
    store = FakeStore()
    report = run_import(io.StringIO(csv_text(header, "212-555-0134")), store)
    assert report.imported == 1
    assert report.column_map == {header.strip(): "phone"}
    assert store.recipients[0].phone == NY


def test_standard_field_aliases_fill_the_recipient() -> None:
    store = FakeStore()
    data = csv_text(
        "Given Name,Surname,E-mail,Organisation,Mobile,Priority",
        "Ann,Lee,ann@example.com,Acme Dental,(212) 555-0134,5",
    )
    report = run_import(io.StringIO(data), store)
    assert report.column_map == {
        "Given Name": "first_name",
        "Surname": "last_name",
        "E-mail": "email",
        "Organisation": "company",
        "Mobile": "phone",
        "Priority": "priority",
    }
    recipient = store.recipients[0]
    assert (recipient.first_name, recipient.last_name) == ("Ann", "Lee")
    assert (recipient.email, recipient.company, recipient.priority) == (
        "ann@example.com",
        "Acme Dental",
        5,
    )
    assert recipient.variables == {}
    assert report.custom_columns == ()


def test_alias_tables_name_the_seed_headers() -> None:
    assert PHONE_ALIASES[:4] == ("phone_number", "phone", "phonenumber", "mobile")
    assert FIELD_ALIASES["phone"] == PHONE_ALIASES
    assert {"first_name", "firstname", "first"} <= set(FIELD_ALIASES["first_name"])
    assert {"last_name", "lastname", "last"} <= set(FIELD_ALIASES["last_name"])


def test_other_columns_become_custom_variables_under_normalised_keys() -> None:
    store = FakeStore()
    data = csv_text(
        "phone,Due Date,Plan,Amount (USD),Notes", "+1 212 555 0134,2026-07-15,gold,12.50,"
    )
    report = run_import(io.StringIO(data), store)
    assert report.custom_columns == ("due_date", "plan", "amount_usd", "notes")
    assert report.column_map["Due Date"] == "due_date"
    recipient = store.recipients[0]
    assert recipient.variables == {
        "due_date": "2026-07-15",
        "plan": "gold",
        "amount_usd": "12.50",
        "notes": "",
    }
    assert (
        "{first_name}, your {plan} plan is due on {due_date}".format(
            **recipient.template_variables()
        )
        == ", your gold plan is due on 2026-07-15"
    )


def test_the_preferred_alias_wins_and_the_other_column_stays_custom() -> None:
    store = FakeStore()
    data = csv_text("Mobile,Phone Number,Email,Email", f"{SF},{NY},a@example.com,b@example.com")
    report = run_import(io.StringIO(data), store)
    assert report.column_map["Phone Number"] == "phone"
    recipient = store.recipients[0]
    assert recipient.phone == NY
    assert recipient.email == "a@example.com"
    # A custom key never hides a standard template variable such as {email}.
    assert recipient.variables == {"mobile": SF, "email_2": "b@example.com"}


def test_a_full_name_is_split_when_there_is_no_first_or_last_name_column() -> None:
    store = FakeStore()
    data = csv_text("Full Name,Phone", f"Mary Ann Smith,{NY}", f"Cher,{SF}", f",{CHI}")
    run_import(io.StringIO(data), store)
    assert [(r.first_name, r.last_name) for r in store.recipients] == [
        ("Mary", "Ann Smith"),
        ("Cher", None),
        (None, None),
    ]
    assert store.recipients[0].variables == {}


def test_a_full_name_stays_a_custom_variable_next_to_a_first_name_column() -> None:
    store = FakeStore()
    run_import(io.StringIO(csv_text("name,first_name,phone", f"Dr. Ann Lee,Ann,{NY}")), store)
    recipient = store.recipients[0]
    assert (recipient.first_name, recipient.last_name) == ("Ann", None)
    assert recipient.variables == {"name": "Dr. Ann Lee"}


def test_blank_and_trailing_headers() -> None:
    store = FakeStore()
    report = run_import(io.StringIO(csv_text("phone,,plan,", f"{NY},x,gold,")), store)
    assert report.headers == ("phone", "", "plan")
    assert store.recipients[0].variables == {"column_2": "x", "plan": "gold"}


def test_a_file_without_a_phone_column_is_refused_with_the_headers_found() -> None:
    store = FakeStore()
    with pytest.raises(MissingPhoneColumn) as refused:
        run_import(io.StringIO(csv_text("Name,Email", "Ann,ann@example.com")), store)
    assert refused.value.row == 1
    assert "'Name', 'Email'" in str(refused.value)
    assert store.batches == []


@pytest.mark.parametrize("data", ["", "\n\n", "\ufeff"])
def test_an_empty_file_is_refused(data: str) -> None:
    with pytest.raises(MissingPhoneColumn, match="empty"):
        run_import(io.StringIO(data))


# -- encodings and dialects ------------------------------------------------------------------


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_header() -> None:
    data = codecs.BOM_UTF8 + csv_text("Phone,Name", f"{NY},José Núñez").encode()
    store = FakeStore()
    report = run_import(data, store)
    assert report.headers == ("Phone", "Name")
    assert (store.recipients[0].first_name, store.recipients[0].last_name) == ("José", "Núñez")


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_the_delimiter_is_sniffed(delimiter: str) -> None:
    rows = [
        ["phone_number", "first_name", "company"],
        ["+1 212 555 0134", "Ann", "Acme, Inc."],
        ["+91 98765 43210", "Dev", "Tata; Sons"],
    ]
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter).writerows(rows)
    store = FakeStore()
    report = run_import(buffer.getvalue().encode(), store)
    assert report.imported == 2
    assert [r.company for r in store.recipients] == ["Acme, Inc.", "Tata; Sons"]


def test_a_one_column_file_needs_no_delimiter() -> None:
    store = FakeStore()
    assert run_import(io.StringIO(csv_text("phone", NY, SF)), store).imported == 2


@pytest.mark.parametrize("ending", ["\r\n", "\r"])
def test_windows_and_old_mac_line_endings(ending: str) -> None:
    data = ending.join(["phone,plan", f"{NY},gold", f"{SF},basic", ""]).encode()
    store = FakeStore()
    report = run_import(data, store)
    assert report.total_rows == 2
    assert [r.variables["plan"] for r in store.recipients] == ["gold", "basic"]


def test_quoted_newlines_stay_in_the_cell_and_rows_count_records() -> None:
    data = csv_text(
        "phone,notes",
        f'{NY},"line one',
        'line two, with a comma"',
        "12345,short",
    )
    results = list(read_recipients_csv(io.StringIO(data), default_region="US"))
    assert isinstance(results[0], ParsedRow)
    assert results[0].variables["notes"] == "line one\nline two, with a comma"
    # The bad number is on the fourth line of the file but is the third record.
    assert results[1] == RowProblem(3, "phone", "12345", "too short")


def test_undecodable_bytes_name_their_row_and_nothing_is_stored() -> None:
    lines = [b"phone,name", NY.encode() + b",Ann", SF.encode() + b",Jos\xe9", b""]
    store = FakeStore()
    with pytest.raises(CsvDecodeError) as refused:
        run_import(b"\n".join(lines), store)
    assert refused.value.row == 3
    assert "UTF-8" in str(refused.value)
    assert store.batches == []


def test_a_decode_error_inside_a_quoted_multiline_cell_names_the_record() -> None:
    data = b'phone,notes\n+12125550134,"first\nsecond \xff"\n'
    with pytest.raises(CsvDecodeError) as refused:
        list(read_recipients_csv(data))
    assert refused.value.row == 2


def test_a_utf16_file_is_refused_with_a_hint() -> None:
    data = csv_text("phone", NY).encode("utf-16")
    with pytest.raises(CsvDecodeError, match="UTF-16"):
        run_import(data)


# -- sources -------------------------------------------------------------------------------


class OneWayStream(io.RawIOBase):
    """A binary stream that cannot seek, delivering a few bytes at a time (like a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(min(len(buffer), 7))
        buffer[: len(chunk)] = chunk
        return len(chunk)


SOURCE_TEXT = codecs.BOM_UTF8.decode() + csv_text("phone,plan", f"{NY},gold", "bad,x", f"{SF},")


@pytest.mark.parametrize(
    "kind", ["path", "str path", "bytes", "bytearray", "binary file", "text file", "one-way stream"]
)
def test_every_kind_of_source_imports_the_same(kind: str, tmp_path: Path) -> None:
    data = SOURCE_TEXT.encode()
    path = tmp_path / "recipients.csv"
    path.write_bytes(data)
    source: Any = {
        "path": path,
        "str path": str(path),
        "bytes": data,
        "bytearray": bytearray(data),
        "binary file": io.BytesIO(data),
        "text file": io.StringIO(SOURCE_TEXT),
        "one-way stream": io.BufferedReader(OneWayStream(data), buffer_size=16),
    }[kind]
    store = FakeStore()
    report = run_import(source, store)
    assert (report.total_rows, report.imported, report.rejected) == (3, 2, 1)
    assert [(r.phone, r.variables["plan"]) for r in store.recipients] == [(NY, "gold"), (SF, "")]


def test_a_file_object_is_read_from_where_it_stands() -> None:
    stream = io.BytesIO(b"preamble to skip\n" + csv_text("phone", NY).encode())
    stream.readline()
    assert run_import(stream).imported == 1


def test_a_str_with_newlines_is_not_taken_for_a_path() -> None:
    with pytest.raises(TypeError, match="StringIO"):
        run_import(csv_text("phone", NY))


# -- rows ----------------------------------------------------------------------------------


def test_bad_rows_are_reported_with_row_column_and_reason_while_the_others_import() -> None:
    data = csv_text(
        "Name,Phone Number,Priority",
        f"Ann,{NY},1",
        "Bob,12345,",
        "Cy,1-800-FLOWERS,",
        "Di,,",
        f"Ed,{SF},high",
        f"Flo,{CHI},,surplus",
        f"Gus,{LONDON},,",
    )
    store = FakeStore()
    report = run_import(io.StringIO(data), store)
    assert [r.phone for r in store.recipients] == [NY, LONDON]
    assert report.problems == (
        RowProblem(3, "Phone Number", "12345", "too short"),
        RowProblem(4, "Phone Number", "1-800-FLOWERS", "contains letters"),
        RowProblem(5, "Phone Number", "", "empty"),
        RowProblem(6, "Priority", "high", "priority must be a whole number"),
        RowProblem(7, None, "surplus", "the row has 4 values but the header has 3 columns"),
    )
    assert report.rejected == 5
    assert str(report.problems[0]) == "row 3, column 'Phone Number': '12345' too short"


def test_blank_rows_are_skipped_and_keep_their_row_numbers() -> None:
    data = csv_text("phone,name", f"{NY},Ann", "", " , ", "oops,Bob")
    report = run_import(io.StringIO(data))
    assert report.total_rows == 2
    assert report.problems == (RowProblem(5, "phone", "oops", "contains letters"),)


def test_a_malformed_record_is_a_row_problem() -> None:
    data = csv_text("phone,notes", f'{NY},"closed"x', f"{SF},fine", f'{CHI},"never closed')
    store = FakeStore()
    report = run_import(io.StringIO(data), store)
    assert [r.phone for r in store.recipients] == [SF]
    assert [(p.row, p.column) for p in report.problems] == [(2, None), (4, None)]
    assert all(p.reason.startswith("malformed CSV") for p in report.problems)


def test_cells_are_stripped_and_priority_may_be_written_as_a_float() -> None:
    store = FakeStore()
    run_import(io.StringIO(csv_text("phone,first_name,priority", f"  {NY} ,  Ann  , 2.0 ")), store)
    recipient = store.recipients[0]
    assert (recipient.phone, recipient.first_name, recipient.priority) == (NY, "Ann", 2)


def test_recipients_get_ids_time_zones_created_at_and_their_campaign() -> None:
    store = FakeStore()
    run_import(io.StringIO(csv_text("phone", "(212) 555-0134", "+44 7911 123456")), store)
    ny, london = store.recipients
    assert (ny.id, london.id) == ("r1", "r2")
    assert (ny.campaign_id, ny.workspace_id, ny.created_at) == ("c1", "w1", NOW)
    assert ny.time_zones == ("America/New_York",)
    assert "Europe/London" in london.time_zones  # UK mobiles: London, Jersey, Guernsey...
    assert ny.status is RecipientStatus.PENDING


def test_default_ids_are_32_hex_digits_unique_within_and_across_imports() -> None:
    data = csv_text("phone", NY, SF, CHI, MUMBAI).encode()
    imports = []
    for _ in range(2):
        store = FakeStore()
        import_recipients_csv(
            data, campaign_id="c1", workspace_id="w1", now=NOW, add_batch=store.add_batch
        )
        imports.append([r.id for r in store.recipients])
    ids = [i for ids in imports for i in ids]
    assert len(set(ids)) == 8
    assert all(len(i) == 32 and set(i) <= set("0123456789abcdef") for i in ids)
    # one random prefix per import, then the recipient's place in it
    first, second = imports
    assert {i[:24] for i in first} != {i[:24] for i in second}
    assert len({i[:24] for i in first}) == 1
    assert [int(i[24:], 16) for i in first] == [0, 1, 2, 3]


def test_indian_numbers_in_the_seed_forms_normalise_with_default_region_in() -> None:
    data = csv_text(
        "mobile,name", "9876543210,A", "09876543210,B", "919876543210,C", "+91 98765-43210,D"
    )
    store = FakeStore()
    report = run_import(io.StringIO(data), store, default_region="IN")
    assert report.imported == 1
    assert report.duplicates_in_file == 3
    (recipient,) = store.recipients
    assert recipient.phone == MUMBAI
    assert recipient.first_name == "A"
    (zone,) = recipient.time_zones
    assert ZoneInfo(zone).utcoffset(NOW.replace(tzinfo=None)) == timedelta(hours=5, minutes=30)


def test_without_a_default_region_national_numbers_are_rejected() -> None:
    report = run_import(io.StringIO(csv_text("phone", "(212) 555-0134", NY)), default_region=None)
    assert report.imported == 1
    assert report.problems == (
        RowProblem(2, "phone", "(212) 555-0134", "no country code and no default region"),
    )


def test_an_unknown_default_region_is_refused_before_reading() -> None:
    with pytest.raises(ConfigurationError) as refused:
        run_import(io.StringIO(""), default_region="XX")
    assert refused.value.field == "default_region"


# -- duplicates and limits -------------------------------------------------------------------


def test_duplicates_in_the_file_are_counted_and_the_first_is_kept() -> None:
    data = csv_text("phone,name", f"{NY},First", "(212) 555-0134,Second", f"{SF},Other")
    store = FakeStore()
    report = run_import(io.StringIO(data), store)
    assert (report.imported, report.duplicates_in_file) == (2, 1)
    assert store.by_phone(NY).first_name == "First"


def test_duplicates_of_numbers_already_in_the_campaign_are_counted_from_add_batch() -> None:
    store = FakeStore(phones={SF})
    data = csv_text("phone", NY, SF, CHI)
    report = run_import(io.StringIO(data), store)
    assert (report.imported, report.duplicates_in_campaign) == (2, 1)
    again = run_import(io.StringIO(data), store, existing_count=3)
    assert (again.imported, again.duplicates_in_campaign) == (0, 3)


def test_the_row_limit_is_refused_before_any_batch_is_stored() -> None:
    store = FakeStore()
    data = csv_text("phone", NY, SF, CHI)
    with pytest.raises(RowLimitExceeded) as refused:
        run_import(io.StringIO(data), store, existing_count=8, limit=10)
    assert (refused.value.limit, refused.value.existing, refused.value.incoming) == (10, 8, 3)
    assert store.batches == []


def test_bad_rows_and_duplicates_do_not_count_towards_the_limit() -> None:
    data = csv_text("phone", NY, "bad", NY, SF)
    assert run_import(io.StringIO(data), existing_count=8, limit=10).imported == 2


def test_batches_hold_at_most_batch_size_recipients_in_file_order() -> None:
    store = FakeStore()
    data = csv_text("phone", *(f"+1212555{n:04d}" for n in range(2000, 2023)))
    report = run_import(io.StringIO(data), store, batch_size=5)
    assert store.batches == [5, 5, 5, 5, 3]
    assert report.imported == 23
    assert [r.phone for r in store.recipients] == sorted(r.phone for r in store.recipients)


def test_add_batch_must_return_a_plausible_count() -> None:
    with pytest.raises(ValueError, match="add_batch returned 3 for a batch of 1"):
        import_recipients_csv(
            io.StringIO(csv_text("phone", NY)),
            campaign_id="c1",
            workspace_id="w1",
            now=NOW,
            add_batch=lambda batch: 3,
        )


@pytest.mark.parametrize(
    ("option", "value"), [("batch_size", 0), ("limit", -1), ("existing_count", -5)]
)
def test_nonsensical_options_are_refused(option: str, value: int) -> None:
    with pytest.raises(ConfigurationError) as refused:
        run_import(io.StringIO(csv_text("phone", NY)), **{option: value})  # type: ignore[arg-type]
    assert refused.value.field == option


def test_now_must_be_aware() -> None:
    with pytest.raises(NaiveDatetimeError):
        import_recipients_csv(
            io.StringIO(csv_text("phone", NY)),
            campaign_id="c1",
            workspace_id="w1",
            now=datetime(2026, 7, 1, 12, 0),
            add_batch=len,
        )


# -- the report ------------------------------------------------------------------------------


def test_the_quality_report_gives_each_fields_completeness_over_valid_rows() -> None:
    data = csv_text(
        "phone,first_name,email,plan",
        f"{NY},Ann,ann@example.com,gold",
        f"{SF},,,",
        f"{CHI},Cy,,basic",
        f"{LONDON},Di,,",
        "invalid,Ed,ed@example.com,gold",
    )
    report = run_import(io.StringIO(data))
    quality = {q.field: (q.filled, q.total) for q in report.quality}
    assert quality == {
        "phone": (4, 4),
        "first_name": (3, 4),
        "last_name": (0, 4),
        "email": (1, 4),
        "company": (0, 4),
        "plan": (2, 4),
    }
    assert report.quality[1].percent == 75.0
    assert report.to_dict()["quality"][1] == {
        "field": "first_name",
        "filled": 3,
        "total": 4,
        "percent": 75.0,
    }


def test_an_empty_import_reports_zero_percent() -> None:
    report = run_import(io.StringIO(csv_text("phone", "bad")))
    assert report.quality[0].total == 0
    assert report.quality[0].percent == 0.0


def test_the_report_is_json_ready() -> None:
    report = run_import(io.StringIO(csv_text("Phone,Plan", f"{NY},gold", "x,y")))
    assert json.loads(json.dumps(report.to_dict())) == {
        "total_rows": 2,
        "imported": 1,
        "rejected": 1,
        "duplicates_in_file": 0,
        "duplicates_in_campaign": 0,
        "problems": [{"row": 3, "column": "Phone", "value": "x", "reason": "contains letters"}],
        "quality": [
            {"field": f, "filled": n, "total": 1, "percent": 100.0 * n}
            for f, n in [
                ("phone", 1),
                ("first_name", 0),
                ("last_name", 0),
                ("email", 0),
                ("company", 0),
                ("plan", 1),
            ]
        ],
        "headers": ["Phone", "Plan"],
        "column_map": {"Phone": "phone", "Plan": "plan"},
        "custom_columns": ["plan"],
    }


ROW_KINDS = st.sampled_from(["good", "bad", "blank", "repeat", "known"])


@settings(max_examples=40, deadline=None)
@given(kinds=st.lists(ROW_KINDS, max_size=30), batch_size=st.integers(1, 7))
def test_every_row_is_counted_exactly_once(kinds: list[str], batch_size: int) -> None:
    known = "+12125559876"
    store = FakeStore(phones={known})
    lines, fresh, previous = ["phone"], iter(range(2000, 9000)), "(415) 555-1999"
    for kind in kinds:
        if kind == "good":
            previous = f"+1 415 555 {next(fresh):04d}"
        elif kind == "bad":
            previous = "12"
        elif kind == "known":
            previous = known
        lines.append("" if kind == "blank" else previous)
    report = run_import(io.StringIO(csv_text(*lines)), store, batch_size=batch_size)
    accounted = (
        report.imported
        + report.rejected
        + report.duplicates_in_file
        + report.duplicates_in_campaign
    )
    assert report.total_rows == accounted == sum(k != "blank" for k in kinds)
    assert report.imported == len(store.recipients)
    assert all(size <= batch_size for size in store.batches)


# -- reading as a stream -----------------------------------------------------------------------


def test_read_recipients_csv_yields_rows_and_problems_in_file_order() -> None:
    data = csv_text("phone,first_name,plan", f"{NY},Ann,gold", "nope,Bob,", "", f"{NY},Again,")
    results = list(read_recipients_csv(io.StringIO(data), default_region="US"))
    assert results == [
        ParsedRow(
            row=2,
            phone=NY,
            first_name="Ann",
            variables={"plan": "gold"},
            time_zones=("America/New_York",),
        ),
        RowProblem(3, "phone", "nope", "contains letters"),
        ParsedRow(
            row=5,
            phone=NY,
            first_name="Again",
            variables={"plan": ""},
            time_zones=("America/New_York",),
        ),
    ]


def test_read_recipients_csv_reports_header_errors_when_iterated() -> None:
    rows = read_recipients_csv(io.StringIO(csv_text("name", "Ann")))
    with pytest.raises(MissingPhoneColumn):
        next(rows)


def test_a_malformed_header_is_refused() -> None:
    with pytest.raises(CsvImportError, match="cannot read the header") as refused:
        run_import(io.StringIO(csv_text('"phone"x,name', f"{NY},Ann")))
    assert refused.value.row == 1


# -- formulas and export -----------------------------------------------------------------------

FORMULAS = ["=SUM(A1:A9)", "+1+2", "-2+3", "@cmd", '=HYPERLINK("http://x.example","y")']


def test_formula_like_cells_are_stored_as_text_and_escaped_on_export() -> None:
    store = FakeStore()
    lines = ["phone,first_name,note"] + [
        f'{NY[:-2]}{10 + i},"{f.replace(chr(34), chr(34) * 2)}",{f[:2]}'
        for i, f in enumerate(FORMULAS)
    ]
    run_import(io.StringIO(csv_text(*lines)), store)
    assert [r.first_name for r in store.recipients] == FORMULAS
    out = io.StringIO(newline="")
    assert export_recipients_csv(store.recipients, out) == len(FORMULAS)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == [
        "phone_number",
        "first_name",
        "last_name",
        "email",
        "company",
        "priority",
        "note",
    ]
    for row, formula in zip(rows[1:], FORMULAS, strict=True):
        assert row[0].startswith("+")  # the validated E.164 phone is left alone
        assert row[1] == "'" + formula
        assert row[6] == "'" + formula[:2]


def test_export_writes_result_columns_on_request() -> None:
    recipient = Recipient(
        id="r1",
        campaign_id="c1",
        workspace_id="w1",
        phone=NY,
        created_at=NOW,
        first_name="Ann",
        status=RecipientStatus.COMPLETED,
        outcome=CallOutcome.ANSWERED,
        attempts=2,
        last_attempt_at=NOW,
        time_zones=("America/New_York",),
        variables={"plan": "-gold"},
    )
    out = io.StringIO()
    columns = ["id", "phone", "status", "outcome", "attempts", "last_attempt_at", "plan", "nope"]
    assert export_recipients_csv([recipient], out, columns=columns) == 1
    assert out.getvalue().splitlines() == [
        "id,phone,status,outcome,attempts,last_attempt_at,plan,nope",
        f"r1,{NY},completed,answered,2,2026-07-01T14:00:00+00:00,'-gold,",
    ]


def test_an_invalid_phone_is_escaped_on_export_like_any_cell() -> None:
    recipient = Recipient(id="r", campaign_id="c", workspace_id="w", phone="=1+1", created_at=NOW)
    out = io.StringIO()
    export_recipients_csv([recipient], out, columns=["phone_number"])
    assert out.getvalue().splitlines()[1] == "'=1+1"


CELL_TEXT = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12
).map(str.strip)
KEYS = st.from_regex(r"[a-z][a-z0-9]{0,5}(_[a-z0-9]{1,4}){0,2}", fullmatch=True).filter(
    lambda key: (
        key
        not in {"phone", "phone_number", "first_name", "last_name", "email", "company", "priority"}
    )
)
PHONES = [f"+1415555{n:04d}" for n in range(2000, 2060)] + [MUMBAI, LONDON]


@settings(max_examples=60, deadline=None)
@given(
    people=st.lists(
        st.tuples(
            st.sampled_from(PHONES),
            CELL_TEXT,
            CELL_TEXT,
            CELL_TEXT,
            st.integers(-5, 5),
            st.dictionaries(
                KEYS, CELL_TEXT | st.sampled_from([*FORMULAS, "'=x", "''"]), max_size=3
            ),
        ),
        max_size=8,
        unique_by=lambda person: person[0],
    ),
    keys=st.lists(KEYS, min_size=0, max_size=3, unique=True),
)
def test_exported_recipients_import_back_unchanged(
    people: list[tuple[str, str, str, str, int, dict[str, str]]], keys: list[str]
) -> None:
    recipients = [
        Recipient(
            id=f"r{i}",
            campaign_id="c1",
            workspace_id="w1",
            phone=phone,
            created_at=NOW,
            first_name=first or None,
            last_name=last or None,
            company=company or None,
            priority=priority,
            # Every recipient of one import has the same custom columns.
            variables={key: variables.get(key, "") for key in keys},
        )
        for i, (phone, first, last, company, priority, variables) in enumerate(people)
    ]
    out = io.StringIO(newline="")
    export_recipients_csv(recipients, out)
    store = FakeStore()
    report = run_import(out.getvalue().encode(), store)
    assert report.problems == ()
    fields = ("phone", "first_name", "last_name", "email", "company", "priority", "variables")
    assert [[getattr(r, f) for f in fields] for r in store.recipients] == [
        [getattr(r, f) for f in fields] for r in recipients
    ]


def test_the_example_file_imports_with_its_documented_problems() -> None:
    store = FakeStore()
    report = run_import(ROOT / "examples" / "recipients.csv", store)
    assert report.total_rows == 198
    assert (report.imported, report.rejected, report.duplicates_in_file) == (191, 6, 1)
    assert report.custom_columns == ("plan", "due_date", "notes")
    assert {p.reason for p in report.problems} >= {"too short", "contains letters", "empty"}
    country_codes = {phonenumbers.parse(r.phone).country_code for r in store.recipients}
    assert country_codes == {1, 91, 44}


# -- scale ------------------------------------------------------------------------------------


def generated_csv(rows: int, seed: int = 3) -> Iterable[str]:
    """A header and ``rows`` rows of distinct valid US numbers with names and custom columns."""
    rng = random.Random(seed)
    yield "phone_number,first_name,last_name,email,company,plan,due_date\n"
    area_codes = ("212", "312", "415", "617", "713")
    for i in range(rows):
        exchange, line = divmod(i, 10_000)
        number = f"+1{area_codes[exchange % 5]}{200 + exchange // 5:03d}{line:04d}"
        yield (
            f"{number},Name{i},Surname{rng.randint(0, 999)},person{i}@example.com,"
            f"Company {i % 97},{rng.choice(('basic', 'gold'))},2026-{1 + i % 12:02d}-15\n"
        )


def test_fifty_thousand_rows_import_in_a_bounded_number_of_batches() -> None:
    data = "".join(generated_csv(50_000)).encode()
    batches: list[int] = []

    def add_batch(batch: Sequence[Recipient]) -> int:
        batches.append(len(batch))
        return len(batch)

    report = import_recipients_csv(
        data,
        campaign_id="c1",
        workspace_id="w1",
        now=NOW,
        add_batch=add_batch,
        limit=50_000,
        batch_size=2_000,
    )
    assert report.imported == 50_000
    assert batches == [2_000] * 25
    assert all(q.percent == 100.0 for q in report.quality)


def _peak_import_memory(path: Path, rows: int) -> int:
    """Peak bytes traced while importing ``path`` (whose ``rows`` are all valid and distinct)."""
    tracemalloc.start()
    try:
        report = import_recipients_csv(
            path,
            campaign_id="c1",
            workspace_id="w1",
            now=NOW,
            add_batch=len,
            limit=rows,
            batch_size=100,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.imported == rows
    return peak


def test_memory_grows_with_a_few_bytes_per_row_not_with_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Memory is flat when a bigger file costs only the documented bookkeeping: 10
    # bytes per row and at most 24 per distinct number (the index, while it
    # doubles). Keeping the rows, or even a str or an int object per row, would
    # cost 50 bytes a row or more; the file grows by about 83. Files are read in 4
    # KB chunks and stored 100 rows a batch here, so that neither where a chunk
    # ends (up to 64 KB of transient bytes and lines) nor a batch of recipients
    # hides what either pass keeps.
    monkeypatch.setattr(csv_import, "_CHUNK", 4096)
    sizes, peaks = [], []
    for rows in (500, 1_000, 4_000):  # the first warms up caches that phone parsing fills once
        path = tmp_path / f"{rows}.csv"
        with path.open("w", encoding="utf-8", newline="") as out:
            out.writelines(generated_csv(rows))
        sizes.append(path.stat().st_size)
        peaks.append(_peak_import_memory(path, rows))
    per_row = (peaks[2] - peaks[1]) / 3_000
    file_per_row = (sizes[2] - sizes[1]) / 3_000
    assert file_per_row > 80
    assert per_row < 40, f"{per_row:.1f} bytes per row ({file_per_row:.1f} in the file)"

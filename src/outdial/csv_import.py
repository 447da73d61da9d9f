"""Recipients in and out of CSV files.

:func:`import_recipients_csv` turns an uploaded CSV file into recipients of a
campaign and says what happened in an :class:`ImportReport`;
:func:`read_recipients_csv` is the streaming parser underneath, and
:func:`export_recipients_csv` writes recipients back out.

Reading
    The file is UTF-8, with or without a byte order mark; bytes that are not
    UTF-8 raise :class:`~outdial.errors.CsvDecodeError` naming the row. The
    delimiter (comma, semicolon or tab) is sniffed from the first few KB.
    Quoted fields may hold delimiters, quotes and newlines.

Rows
    Rows are numbered as a spreadsheet shows them: the header is row 1 and the
    first data row is row 2. A row is one CSV *record*: a quoted field that
    holds a newline does not start a new row. Blank rows are skipped (they keep
    their number, so later numbers still match the spreadsheet).

Columns
    Headers are matched to fields through :data:`FIELD_ALIASES`, ignoring case,
    spaces and punctuation (``Phone Number``, ``PHONE-NUMBER`` and
    ``phone.number`` all name the phone). A phone column is required
    (:class:`~outdial.errors.MissingPhoneColumn`). When several headers name the
    same field, the earlier alias in the table wins, then the earlier column; the
    others are kept as custom columns. A full-name column (``name``) is split at
    its first space into first and last name when the file has neither a first
    nor a last name column; otherwise it is kept as the custom variable ``name``.
    Every other column is a custom variable under a normalised key (``Due Date``
    becomes ``due_date``) so that message templates can say ``{due_date}``; a
    key never takes a standard field's name (a second ``email`` column becomes
    ``email_2``). A blank header names ``column_N``; blank headers at the end of
    the header row (a trailing delimiter) name nothing, and a row with values
    beyond the last named column is refused rather than silently cut.

Cells
    Cells are stripped of surrounding blanks. Everything is stored as text and
    never evaluated, including cells that look like spreadsheet formulas
    (``=SUM(A1)``). A leading ``'`` in front of ``= + - @``, a tab, a carriage
    return or another ``'`` is the escape :func:`export_recipients_csv` writes;
    import removes it, so an exported file imports back unchanged.

Memory
    Files are streamed in 64 KB chunks and never read whole. An import makes two
    passes: the first validates every row and counts, so that an import over the
    row limit is refused before anything is stored; the second builds recipients
    batch by batch. Between passes it keeps, per row, the E.164 number as an
    integer and an index into the distinct time-zone tuples (10 bytes), plus an
    index of the numbers seen (8 to 16 bytes per distinct number) and the
    rejected rows' problems. A source that cannot seek is first spooled to a
    temporary file (in memory up to 4 MB, then on disk).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import re
import tempfile
import uuid
from array import array
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from operator import add, attrgetter, itemgetter
from types import MappingProxyType
from typing import IO, Any, TextIO, Union

import attrs

from outdial._time import require_aware
from outdial.errors import (
    ConfigurationError,
    CsvDecodeError,
    CsvImportError,
    InvalidPhoneNumber,
    MissingPhoneColumn,
    RowLimitExceeded,
)
from outdial.phone import _e164_and_zones, normalize_phone
from outdial.recipient import Recipient

__all__ = [
    "FIELD_ALIASES",
    "PHONE_ALIASES",
    "CsvSource",
    "FieldQuality",
    "ImportReport",
    "ParsedRow",
    "RowProblem",
    "export_recipients_csv",
    "import_recipients_csv",
    "read_recipients_csv",
]

#: What a CSV can be read from: a path, the file's bytes, or a file object opened
#: in binary (preferred: decode errors then name their exact row) or text mode.
CsvSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], IO[str]]

#: Headers that name the phone column, in order of preference.
PHONE_ALIASES: tuple[str, ...] = (
    "phone_number",
    "phone",
    "phonenumber",
    "mobile",
    "mobile_number",
    "mobile no",
    "mobile phone",
    "cell",
    "cell phone",
    "contact number",
    "tel",
    "telephone",
)

#: Field name -> headers that name it, in order of preference. Matching ignores
#: case, spaces and punctuation. ``name`` is a full name (see the module docs).
FIELD_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "phone": PHONE_ALIASES,
        "first_name": ("first_name", "firstname", "first", "given name", "forename"),
        "last_name": ("last_name", "lastname", "last", "surname", "family name"),
        "email": ("email", "e-mail", "email address"),
        "company": ("company", "organisation", "organization", "company name"),
        "name": ("name", "full name", "contact name"),
        "priority": ("priority",),
    }
)

# Cell beginnings a spreadsheet may treat as a formula (OWASP "CSV injection").
_FORMULA_START = frozenset("=+-@\t\r")
_ESCAPED_START = _FORMULA_START | {"'"}  # after a leading ' that an export added
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_PUNCTUATION = re.compile(r"[\W_]+")
_DELIMITERS = ",;\t"
_CHUNK = 1 << 16
_SNIFF_BYTES = 8192
_SPOOL_MEMORY = 4 << 20
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# Custom keys never take these names: they would hide a standard template variable.
_RESERVED_KEYS = frozenset(
    {"phone", "phone_number", "first_name", "last_name", "email", "company", "priority"}
)
_QUALITY_FIELDS = ("phone", "first_name", "last_name", "email", "company")


# -- values --------------------------------------------------------------------------------


@attrs.frozen
class RowProblem:
    """A row that was not imported: where (``row``, ``column`` header) and why.

    ``column`` is ``None`` when the whole row is at fault (malformed CSV, more
    values than the header has columns). ``value`` is the offending text.
    """

    row: int
    column: str | None
    value: str | None
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f", column {self.column!r}" if self.column else "")
        value = f" {self.value!r}" if self.value is not None else ""
        return f"{where}:{value} {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "value": self.value, "reason": self.reason}


@attrs.frozen
class FieldQuality:
    """How many of the imported rows have ``field`` filled in."""

    field: str
    filled: int
    total: int

    @property
    def percent(self) -> float:
        """Share of rows with the field filled, 0-100 (0 when there are no rows)."""
        return 100.0 * self.filled / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "filled": self.filled,
            "total": self.total,
            "percent": round(self.percent, 1),
        }


def _frozen_map(value: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


@attrs.frozen
class ImportReport:
    """What an import did.

    Every non-blank data row is counted once in exactly one of ``imported``,
    ``rejected`` (see ``problems``), ``duplicates_in_file`` (a number an earlier
    row of the file has; the first is kept) and ``duplicates_in_campaign`` (a
    number the campaign already had), so they add up to ``total_rows``.
    ``quality`` gives each field's completeness over the rows that were valid
    and unique (phone, first and last name, email, company, then the custom
    columns). ``column_map`` maps each header to its field name or, for a custom
    column, to its variable key (listed in ``custom_columns``); a header repeated
    word for word appears once, with its first column.
    """

    total_rows: int
    imported: int
    duplicates_in_file: int
    duplicates_in_campaign: int
    problems: tuple[RowProblem, ...]
    quality: tuple[FieldQuality, ...]
    headers: tuple[str, ...]
    column_map: Mapping[str, str] = attrs.field(converter=_frozen_map)
    custom_columns: tuple[str, ...] = ()

    @property
    def rejected(self) -> int:
        """Rows refused because of a problem (one problem per row)."""
        return len(self.problems)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "total_rows": self.total_rows,
            "imported": self.imported,
            "rejected": self.rejected,
            "duplicates_in_file": self.duplicates_in_file,
            "duplicates_in_campaign": self.duplicates_in_campaign,
            "problems": [p.to_dict() for p in self.problems],
            "quality": [q.to_dict() for q in self.quality],
            "headers": list(self.headers),
            "column_map": dict(self.column_map),
            "custom_columns": list(self.custom_columns),
        }


@attrs.frozen
class ParsedRow:
    """One valid row of a recipients file, ready to become a :class:`Recipient`."""

    row: int
    phone: str  # E.164
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    company: str | None = None
    variables: Mapping[str, str] = attrs.field(
        factory=lambda: MappingProxyType({}), converter=_frozen_map
    )
    time_zones: tuple[str, ...] = ()
    priority: int = 0


# -- reading -------------------------------------------------------------------------------


def read_recipients_csv(
    source: CsvSource, *, default_region: str | None = None
) -> Iterator[ParsedRow | RowProblem]:
    """Parse a recipients file row by row: a :class:`ParsedRow` for each valid row,
    a :class:`RowProblem` for each invalid one, nothing for blank rows.

    Numbers are normalised to E.164 with ``default_region`` for national forms.
    Duplicates are not removed here (:func:`import_recipients_csv` does that).
    This is a generator: the file is opened, and header errors such as
    :class:`~outdial.errors.MissingPhoneColumn` raised, when iteration starts.
    The source is read once, as a stream.
    """
    _check_region(default_region)
    with contextlib.closing(_chunks_of(source)) as chunks:
        layout, records = _open_csv(chunks)
        for row, cells, error in records:
            if error is not None:
                yield RowProblem(row, None, None, error)
                continue
            if _blank(cells):
                continue
            checked = layout.check(row, cells, default_region)
            if isinstance(checked, RowProblem):
                yield checked
                continue
            e164, time_zones = checked
            first, last, email, company, variables, priority = layout.values(cells)
            yield ParsedRow(
                row=row,
                phone=e164,
                first_name=first,
                last_name=last,
                email=email,
                company=company,
                variables=variables,
                time_zones=time_zones,
                priority=priority,
            )


def import_recipients_csv(
    source: CsvSource,
    *,
    campaign_id: str,
    workspace_id: str,
    now: datetime,
    add_batch: Callable[[Sequence[Recipient]], int],
    existing_count: int = 0,
    limit: int = 10_000,
    default_region: str | None = None,
    new_id: Callable[[], str] | None = None,
    batch_size: int = 1000,
) -> ImportReport:
    """Import a recipients file into a campaign and report what happened.

    Valid rows become :class:`Recipient` values (``created_at=now``, ids from
    ``new_id``, custom columns as ``variables``, ``time_zones`` from the number)
    handed to ``add_batch`` at most ``batch_size`` at a time, in file order.
    Without ``new_id``, ids are 32 lowercase hex digits like ``uuid4().hex``:
    24 random digits drawn once per import (one ``uuid4``, 90 random bits), then
    the recipient's place in the import as 8 hex digits (more past 4 billion),
    so they are unique within an import and, the prefix being random, across
    imports; one ``uuid4`` per row would cost as much as the rest of a row.
    ``add_batch`` stores them and returns how many it inserted; the rest were
    numbers the campaign already had (``UnitOfWork.add_recipients`` does exactly
    this). Invalid rows are reported and skipped; a number repeated in the file
    is imported once.

    If ``existing_count`` plus the valid unique rows exceed ``limit``,
    :class:`~outdial.errors.RowLimitExceeded` is raised before ``add_batch`` is
    ever called. Each ``add_batch`` call is one unit of storage: to make the whole
    import atomic, run it inside one transaction. The source must not change
    while it is imported (it is read twice).
    """
    require_aware(now, "now")
    for name, value, least in (
        ("batch_size", batch_size, 1),
        ("limit", limit, 0),
        ("existing_count", existing_count, 0),
    ):
        if value < least:
            raise ConfigurationError(name, value, f"must be at least {least}")
    _check_region(default_region)
    with _passes(source) as read_again:
        with contextlib.closing(read_again()) as chunks:
            scan = _scan(chunks, default_region)
        if existing_count + scan.unique > limit:
            raise RowLimitExceeded(limit, existing_count, scan.unique)
        with contextlib.closing(read_again()) as chunks:
            layout, records = _open_csv(chunks)
            stored = _store(
                records,
                layout,
                scan,
                campaign_id=campaign_id,
                workspace_id=workspace_id,
                now=now,
                add_batch=add_batch,
                new_id=new_id or _import_ids(),
                batch_size=batch_size,
            )
    inserted, quality = stored
    return ImportReport(
        total_rows=scan.total_rows,
        imported=inserted,
        duplicates_in_file=scan.duplicates,
        duplicates_in_campaign=scan.unique - inserted,
        problems=tuple(scan.problems),
        quality=quality,
        headers=layout.headers,
        column_map=layout.column_map,
        custom_columns=tuple(key for key, _ in layout.custom),
    )


# -- writing -------------------------------------------------------------------------------

_STANDARD_COLUMNS: Mapping[str, Callable[[Recipient], object]] = MappingProxyType(
    {
        "phone_number": lambda r: r.phone,
        "phone": lambda r: r.phone,
        "first_name": lambda r: r.first_name,
        "last_name": lambda r: r.last_name,
        "email": lambda r: r.email,
        "company": lambda r: r.company,
        "priority": lambda r: r.priority,
    }
)
# Result columns an export may ask for; a custom variable of the same name wins.
_RESULT_COLUMNS: Mapping[str, Callable[[Recipient], object]] = MappingProxyType(
    {
        "id": lambda r: r.id,
        "status": lambda r: r.status,
        "outcome": lambda r: r.outcome,
        "attempts": lambda r: r.attempts,
        "last_attempt_at": lambda r: r.last_attempt_at,
        "next_attempt_at": lambda r: r.next_attempt_at,
        "duration_seconds": lambda r: r.duration_seconds,
        "error": lambda r: r.error,
        "external_call_id": lambda r: r.external_call_id,
        "created_at": lambda r: r.created_at,
        "updated_at": lambda r: r.updated_at,
        "time_zones": lambda r: r.time_zones,
    }
)
_DEFAULT_COLUMNS = ("phone_number", "first_name", "last_name", "email", "company", "priority")


def export_recipients_csv(
    recipients: Iterable[Recipient], out: TextIO, *, columns: Sequence[str] | None = None
) -> int:
    """Write ``recipients`` as CSV (a header, then one row each) and return the rows written.

    By default the columns are ``phone_number``, the name, email, company and
    priority fields, then every custom variable in first-seen order (the
    recipients are gathered first to find them), so the file imports back
    unchanged. ``columns`` picks others: those names, a custom variable's key,
    or a result column (``id``, ``status``, ``outcome``, ``attempts``,
    ``last_attempt_at``, ``next_attempt_at``, ``duration_seconds``, ``error``,
    ``external_call_id``, ``created_at``, ``updated_at``, ``time_zones``).

    A cell that begins with ``= + - @``, a tab or a carriage return gets a
    leading ``'`` so that no spreadsheet runs it as a formula; the phone column
    is left alone when it holds a valid E.164 number. Open ``out`` with
    ``newline=""``.
    """
    if columns is None:
        recipients = list(recipients)
        seen = dict.fromkeys(key for r in recipients for key in r.variables)
        columns = (*_DEFAULT_COLUMNS, *(k for k in seen if k not in _DEFAULT_COLUMNS))
    getters = [_getter(name) for name in columns]
    phones = {i for i, name in enumerate(columns) if name in ("phone", "phone_number")}
    writer = csv.writer(out)
    writer.writerow([_escaped(name) for name in columns])
    written = 0
    for recipient in recipients:
        cells = []
        for i, get in enumerate(getters):
            text = _text(get(recipient))
            if not (i in phones and _E164.fullmatch(text)):
                text = _escaped(text)
            cells.append(text)
        writer.writerow(cells)
        written += 1
    return written


def _getter(name: str) -> Callable[[Recipient], object]:
    standard = _STANDARD_COLUMNS.get(name)
    if standard is not None:
        return standard
    result = _RESULT_COLUMNS.get(name)
    if result is not None:
        return lambda r: r.variables[name] if name in r.variables else result(r)
    return lambda r: r.variables.get(name)


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):  # str enums included: their value
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def _escaped(text: str) -> str:
    """``text`` with a leading ``'`` if a spreadsheet could run it as a formula.

    Text that already starts with ``'`` and then ``'`` or a formula character gets
    one too, so that import (which removes one such ``'``) gives back ``text``.
    """
    if text[:1] in _FORMULA_START or (text[:1] == "'" and text[1:2] in _ESCAPED_START):
        return "'" + text
    return text


# -- the header ----------------------------------------------------------------------------


def _match_key(header: str) -> str:
    """``Phone-Number`` -> ``phonenumber``: what header matching compares."""
    return _PUNCTUATION.sub("", header.lower())


def _variable_key(header: str) -> str:
    """``Due Date`` -> ``due_date``: a custom column's template variable name."""
    return _PUNCTUATION.sub("_", header.lower()).strip("_")


_ALIAS_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
    (field, tuple(dict.fromkeys(_match_key(a) for a in aliases)))
    for field, aliases in FIELD_ALIASES.items()
)


@attrs.frozen
class _Layout:
    """Which column holds what, decided once from the header."""

    headers: tuple[str, ...]
    header_row: int
    delimiter: str
    phone: int
    first_name: int | None
    last_name: int | None
    email: int | None
    company: int | None
    full_name: int | None  # split into first and last name
    priority: int | None
    custom: tuple[tuple[str, int], ...]  # (variable key, column)
    column_map: Mapping[str, str]

    @classmethod
    def of(cls, headers: tuple[str, ...], header_row: int, delimiter: str) -> _Layout:
        keys = [_match_key(h) for h in headers]
        fields: dict[str, int] = {}
        for field, aliases in _ALIAS_KEYS:
            for alias in aliases:
                column = next(
                    (i for i, key in enumerate(keys) if key == alias and i not in fields.values()),
                    None,
                )
                if column is not None:
                    fields[field] = column
                    break
        if "phone" not in fields:
            found = ", ".join(repr(h) for h in headers) or "no headers"
            raise MissingPhoneColumn(
                f"no phone column: the header has {found}; name the phone column "
                f"one of {', '.join(PHONE_ALIASES[:4])} (or another alias)",
                row=header_row,
            )
        if "name" in fields and ("first_name" in fields or "last_name" in fields):
            del fields["name"]  # kept as the custom variable ``name``
        taken = set(_RESERVED_KEYS) | ({"name"} if "name" in fields else set())
        custom: list[tuple[str, int]] = []
        by_column = {column: field for field, column in fields.items()}
        column_map: dict[str, str] = {}
        for i, header in enumerate(headers):
            name = by_column.get(i)
            if name is None:
                base = _variable_key(header) or f"column_{i + 1}"
                name, n = base, 1
                while name in taken:
                    n += 1
                    name = f"{base}_{n}"
                taken.add(name)
                custom.append((name, i))
            column_map.setdefault(header, name)
        return cls(
            headers=headers,
            header_row=header_row,
            delimiter=delimiter,
            phone=fields["phone"],
            first_name=fields.get("first_name"),
            last_name=fields.get("last_name"),
            email=fields.get("email"),
            company=fields.get("company"),
            full_name=fields.get("name"),
            priority=fields.get("priority"),
            custom=tuple(custom),
            column_map=MappingProxyType(column_map),
        )

    def check(self, row: int, cells: list[str], region: str | None) -> _Phone | RowProblem:
        """The number (E.164, time zones) of a non-blank row, or the problem that keeps it out."""
        width = len(self.headers)
        if len(cells) > width:
            extra = [cell.strip() for cell in cells[width:] if cell.strip()]
            if extra:
                return RowProblem(
                    row,
                    None,
                    self.delimiter.join(extra),
                    f"the row has {len(cells)} values but the header has {width} columns",
                )
        text = _clean(cells[self.phone]) if self.phone < len(cells) else ""
        try:
            phone = _e164_and_zones(text, region)
        except InvalidPhoneNumber as exc:
            return RowProblem(row, self.headers[self.phone], text, exc.reason)
        if self.priority is not None and self.priority < len(cells):
            value = _clean(cells[self.priority])
            if _priority(value) is None:
                return RowProblem(
                    row, self.headers[self.priority], value, "priority must be a whole number"
                )
        return phone

    def values(
        self, cells: list[str]
    ) -> tuple[str | None, str | None, str | None, str | None, dict[str, str], int]:
        """First and last name, email, company, custom variables and priority of a valid row."""
        if len(cells) < len(self.headers):
            cells = cells + [""] * (len(self.headers) - len(cells))
        if self.full_name is not None:
            parts = _clean(cells[self.full_name]).split(None, 1)
            first = parts[0] if parts else None
            last = parts[1] if len(parts) > 1 else None
        else:
            first = _optional(cells, self.first_name)
            last = _optional(cells, self.last_name)
        priority = 0
        if self.priority is not None:
            priority = _priority(_clean(cells[self.priority])) or 0
        return (
            first,
            last,
            _optional(cells, self.email),
            _optional(cells, self.company),
            {key: _clean(cells[i]) for key, i in self.custom},
            priority,
        )


def _clean(cell: str) -> str:
    """A stripped cell, without the ``'`` that :func:`_escaped` may have put in front."""
    cell = cell.strip()
    return cell[1:] if cell[:1] == "'" and cell[1:2] in _ESCAPED_START else cell


def _optional(cells: list[str], column: int | None) -> str | None:
    return None if column is None else (_clean(cells[column]) or None)


def _priority(text: str) -> int | None:
    """A priority cell as an int (blank is 0); ``None`` when it is not a whole number."""
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _blank(cells: list[str]) -> bool:
    return not "".join(cells).strip()


def _check_region(region: str | None) -> None:
    """Refuse an unknown ``default_region`` up front (ConfigurationError), not at row 2."""
    if region is not None:
        with contextlib.suppress(InvalidPhoneNumber):
            normalize_phone("", region)


# -- records -------------------------------------------------------------------------------

# (row number, cells, why the record is malformed or None)
_Record = tuple[int, list[str], "str | None"]
# A valid row's number: E.164 and time zones.
_Phone = tuple[str, tuple[str, ...]]


def _open_csv(chunks: Iterator[bytes]) -> tuple[_Layout, Iterator[_Record]]:
    """Sniff the delimiter, read the header; the data records follow."""
    first = next(chunks, b"")
    delimiter = _sniff_delimiter(first[:_SNIFF_BYTES])
    records = _records(_lines(itertools.chain((first,), chunks)), delimiter)
    for row, cells, error in records:
        if error is not None:
            raise CsvImportError(f"cannot read the header: {error}", row=row)
        if not _blank(cells):
            headers = [_clean(cell) for cell in cells]
            while not headers[-1]:  # a trailing delimiter names no column
                headers.pop()
            return _Layout.of(tuple(headers), row, delimiter), records
    raise MissingPhoneColumn("the file is empty: expected a header row with a phone column", row=1)


def _records(lines: Iterator[str], delimiter: str) -> Iterator[_Record]:
    """Every record with its row number; a malformed record comes with the reason."""
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    row = 0
    while True:
        row += 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield row, [], f"malformed CSV: {exc}"
            continue
        except UnicodeDecodeError as exc:
            bad = exc.object[exc.start : exc.start + 1]
            raise CsvDecodeError(
                f"the file is not UTF-8 text (byte {bad!r} cannot be decoded); "
                "save it as 'CSV UTF-8' and import it again",
                row=row,
            ) from None
        yield row, cells, None


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Decoded lines, each with its ending (``\\n``, ``\\r\\n`` or ``\\r``), BOM removed.

    Lines are decoded one at a time so that a decode error belongs to a row.
    UTF-8 never uses the bytes of ``\\r`` or ``\\n`` inside a character, so
    splitting before decoding is safe.
    """
    carry = b""
    started = False
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        if not started:
            if len(data) < 3 and _BOM.startswith(data):
                carry = data
                continue
            if data.startswith(_UTF16_BOMS):
                raise CsvDecodeError(
                    "the file is UTF-16 text; save it as 'CSV UTF-8' and import it again",
                    row=1,
                )
            started = True
            data = data.removeprefix(_BOM)
        lines = data.splitlines(keepends=True)
        # The last line may be cut by the chunk (or be a \r whose \n comes next).
        carry = b"" if not lines or lines[-1].endswith(b"\n") else lines.pop()
        yield from map(bytes.decode, lines)
    if carry:
        yield carry.removeprefix(_BOM).decode()


def _sniff_delimiter(head: bytes) -> str:
    """Comma, semicolon or tab, guessed from the start of the file; comma by default."""
    text = head.removeprefix(_BOM).decode("utf-8", "replace")
    sample = text[: text.rfind("\n") + 1] or text  # whole lines only
    header = next((line for line in sample.splitlines() if line.strip()), "")
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","
    if delimiter in header:
        return delimiter
    # The sniffer gave up or was fooled: take the candidate the header uses most.
    counts = {candidate: header.count(candidate) for candidate in _DELIMITERS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


# -- sources -------------------------------------------------------------------------------

_Chunks = Generator[bytes, None, None]


def _chunks_of(source: CsvSource) -> _Chunks:
    """The bytes of ``source`` in chunks, read once (a file object from where it is)."""
    if isinstance(source, str) and "\n" in source:
        raise TypeError("a str source is a path; pass CSV text as io.StringIO(text)")
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            yield from _read_chunks(file)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        yield from _read_chunks(io.BytesIO(source))
    else:
        yield from _read_chunks(source)


def _read_chunks(stream: IO[bytes] | IO[str]) -> _Chunks:
    read = stream.read
    while chunk := read(_CHUNK):
        # Text streams are decoded already; re-encoding keeps one line splitter.
        yield chunk.encode("utf-8", "surrogatepass") if isinstance(chunk, str) else chunk


@contextlib.contextmanager
def _passes(source: CsvSource) -> Iterator[Callable[[], _Chunks]]:
    """A function that reads ``source`` from its start, as often as it is called.

    Paths and bytes are simply read again; a file object is sought back to where
    it was. One that cannot seek is spooled to a temporary file first.
    """
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        yield lambda: _chunks_of(source)
        return
    stream = source
    start = _tell(stream)
    if start is not None:

        def again() -> _Chunks:
            stream.seek(start)
            return _read_chunks(stream)

        yield again
        return
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY) as spool:
        for chunk in _read_chunks(stream):
            spool.write(chunk)

        def from_spool() -> _Chunks:
            spool.seek(0)
            return _read_chunks(spool)

        yield from_spool


def _tell(stream: IO[Any]) -> int | None:
    """Where ``stream`` stands, if it can seek back there; else ``None``."""
    try:
        position = stream.tell()
        stream.seek(position)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None
    return position


# -- the two passes of an import ------------------------------------------------------------


_POSITION = "I" if array("I").itemsize >= 4 else "L"  # an unsigned type of 4 bytes or more


class _Numbers:
    """Per data record, the E.164 digits (without ``+``) of the row to import, 0 for none.

    Repeats are found through an open-addressing index (linear probing, at most
    half full) of 4-byte record positions into the same array, so a number
    costs 8 bytes plus 8 to 16 bytes of index: a fifth of a Python ``set`` of
    ints.
    """

    __slots__ = ("_bits", "_index", "records", "unique")

    def __init__(self) -> None:
        self.records = array("q")
        self.unique = 0
        self._bits = 10
        self._index = array(_POSITION, [0]) * (1 << self._bits)  # record position + 1; 0: empty

    def skip(self) -> None:
        """The next record imports nothing."""
        self.records.append(0)

    def keep(self, number: int) -> bool:
        """The next record imports ``number``, unless an earlier one did: then ``False``."""
        records, index = self.records, self._index
        mask = len(index) - 1
        i = _slot(number, self._bits)
        while held := index[i]:
            if records[held - 1] == number:
                records.append(0)
                return False
            i = (i + 1) & mask
        records.append(number)
        index[i] = len(records)
        self.unique += 1
        if 2 * self.unique > mask:
            self._grow()
        return True

    def _grow(self) -> None:
        self._bits += 1
        index = array(_POSITION, [0]) * (1 << self._bits)
        mask = len(index) - 1
        for position, number in enumerate(self.records, 1):
            if number:
                i = _slot(number, self._bits)
                while index[i]:
                    i = (i + 1) & mask
                index[i] = position
        self._index = index


def _slot(number: int, bits: int) -> int:
    """Fibonacci hashing: the top ``bits`` bits of number * 2**64 / golden ratio."""
    return ((number * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> (64 - bits)


@attrs.define
class _Scan:
    """Pass one: every row validated and counted, the numbers kept compactly."""

    layout: _Layout
    total_rows: int = 0
    duplicates: int = 0
    problems: list[RowProblem] = attrs.Factory(list)
    numbers: _Numbers = attrs.Factory(_Numbers)
    # Per data record, the index of its time zones in ``zone_table`` (few distinct).
    zones: array[int] = attrs.Factory(lambda: array("H"))
    zone_table: list[tuple[str, ...]] = attrs.Factory(list)

    @property
    def unique(self) -> int:
        return self.numbers.unique


def _scan(chunks: Iterator[bytes], region: str | None) -> _Scan:
    """Pass one over the file: validate, count, find repeats; store nothing."""
    layout, records = _open_csv(chunks)
    scan = _Scan(layout)
    numbers, keep_zone, check = scan.numbers, scan.zones.append, layout.check
    zone_index: dict[tuple[str, ...], int] = {}
    for row, cells, error in records:
        if error is None and _blank(cells):
            checked: _Phone | RowProblem | None = None
        else:
            scan.total_rows += 1
            checked = (
                RowProblem(row, None, None, error)
                if error is not None
                else check(row, cells, region)
            )
        if isinstance(checked, tuple):
            e164, time_zones = checked
            if numbers.keep(int(e164[1:])):
                index = zone_index.get(time_zones)
                if index is None:
                    index = zone_index[time_zones] = len(scan.zone_table)
                    scan.zone_table.append(time_zones)
                keep_zone(index)
                continue
            scan.duplicates += 1
        else:
            numbers.skip()
            if checked is not None:
                scan.problems.append(checked)
        keep_zone(0)
    return scan


def _import_ids() -> Callable[[], str]:
    """Recipient ids for one import: one random uuid4 prefix, then a hex counter."""
    prefix = uuid.uuid4().hex[:24]
    count = itertools.count()
    return lambda: f"{prefix}{next(count):08x}"


def _store(
    records: Iterator[_Record],
    layout: _Layout,
    scan: _Scan,
    *,
    campaign_id: str,
    workspace_id: str,
    now: datetime,
    add_batch: Callable[[Sequence[Recipient]], int],
    new_id: Callable[[], str],
    batch_size: int,
) -> tuple[int, tuple[FieldQuality, ...]]:
    """Pass two: recipients of the rows pass one kept, stored batch by batch.

    Returns how many ``add_batch`` inserted and the completeness of each field.
    """
    numbers, zones, zone_table = scan.numbers.records, scan.zones, scan.zone_table
    custom_keys = [key for key, _ in layout.custom]
    fields = (*_QUALITY_FIELDS[1:], *custom_keys)
    standard = [attrgetter(field) for field in _QUALITY_FIELDS[1:]]
    variables_of = attrgetter("variables")
    filled = [0] * len(fields)
    inserted = 0
    batch: list[Recipient] = []

    def flush() -> None:
        nonlocal inserted
        # Counted a batch at a time: a few C-level passes instead of a loop per row.
        counts = [sum(map(bool, map(get, batch))) for get in standard]
        counts += [
            sum(map(bool, map(itemgetter(key), map(variables_of, batch)))) for key in custom_keys
        ]
        filled[:] = map(add, filled, counts)
        count = add_batch(batch)
        if not 0 <= count <= len(batch):
            raise ValueError(f"add_batch returned {count!r} for a batch of {len(batch)}")
        inserted += count
        batch.clear()

    values, append = layout.values, batch.append
    # ``numbers`` first: zip stops there without taking a record too many.
    for number, zone, (_row, cells, _error) in zip(numbers, zones, records, strict=False):
        if not number:
            continue
        first, last, email, company, variables, priority = values(cells)
        append(
            Recipient(
                id=new_id(),
                campaign_id=campaign_id,
                workspace_id=workspace_id,
                phone=f"+{number}",
                created_at=now,
                first_name=first,
                last_name=last,
                email=email,
                company=company,
                variables=variables,
                priority=priority,
                time_zones=zone_table[zone],
            )
        )
        if len(batch) >= batch_size:
            flush()
    if next(records, None) is not None:
        raise CsvImportError("the file changed while it was being imported")
    if batch:
        flush()
    total = scan.unique
    quality = [FieldQuality("phone", total, total)]
    quality += [FieldQuality(f, n, total) for f, n in zip(fields, filled, strict=True)]
    return inserted, tuple(quality)

"""The one error hierarchy of outdial.

Every error raised on purpose by the library derives from :class:`OutdialError`
and, where one fits, from a builtin so that callers can catch either::

    OutdialError
    ├── ConfigurationError (ValueError)           bad settings: field + value
    │   ├── InvalidBusinessHours                    calendar config / slots
    │   ├── UnknownTimeZone                         IANA zone that cannot load
    │   └── InvalidRetryPolicy                      retry / backoff settings
    ├── NaiveDatetimeError (ValueError)             a datetime without tzinfo
    ├── InvalidPhoneNumber (ValueError)             text, reason, row, column
    ├── NoPermittedWindow (ValueError)              number whose rules never open
    ├── InvalidTransition (RuntimeError)            state + action refused
    ├── CampaignValidationError (ValueError)        every problem at finalize
    ├── NotFound (LookupError)                      kind + id (other workspace too)
    ├── DuplicateRecipient (ValueError)             phone already in the campaign
    ├── CsvImportError (ValueError)                 row, column, reason
    │   ├── CsvDecodeError                          undecodable bytes at a row
    │   ├── MissingPhoneColumn                      no phone column in header
    │   └── RowLimitExceeded                        over the campaign's limit
    ├── ProviderError (RuntimeError)                provider, code, message, retryable
    │   ├── ProviderUnavailable (retryable)         5xx, timeouts, connection
    │   ├── ProviderRateLimited (retryable)         429 / concurrency limit
    │   ├── ProviderRejected (not retryable)        invalid number, permissions
    │   └── ProviderAuthError (not retryable)       401 / 403
    ├── WebhookError (ValueError)                   provider + reason
    │   ├── WebhookVerificationError                forged or stale signature
    │   └── WebhookPayloadError                     malformed body
    ├── ApplierClosed (RuntimeError)               group commit not running / stopped
    ├── RepositoryError (RuntimeError)
    │   ├── StaleClaim                              fencing token lost
    │   ├── StaleRead                               changed since it was read
    │   ├── DatabaseUnavailable (ConnectionError)   wrong / unreachable URL
    │   └── SchemaOutOfDate                         run `outdial db upgrade URL`
    └── MissingExtra (ImportError)                  optional extra not installed
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "ApplierClosed",
    "CampaignValidationError",
    "ConfigurationError",
    "CsvDecodeError",
    "CsvImportError",
    "DatabaseUnavailable",
    "DuplicateRecipient",
    "InvalidBusinessHours",
    "InvalidPhoneNumber",
    "InvalidRetryPolicy",
    "InvalidTransition",
    "MissingExtra",
    "MissingPhoneColumn",
    "NaiveDatetimeError",
    "NoPermittedWindow",
    "NotFound",
    "OutdialError",
    "Problem",
    "ProviderAuthError",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderRejected",
    "ProviderUnavailable",
    "RepositoryError",
    "RowLimitExceeded",
    "SchemaOutOfDate",
    "StaleClaim",
    "StaleRead",
    "UnknownTimeZone",
    "WebhookError",
    "WebhookPayloadError",
    "WebhookVerificationError",
]


class OutdialError(Exception):
    """Root of every error outdial raises on purpose."""


# -- configuration -----------------------------------------------------------


class ConfigurationError(OutdialError, ValueError):
    """A setting is invalid. ``field`` is a dotted path, ``value`` what was given."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {value!r} {reason}" if field else f"{value!r} {reason}")


class InvalidBusinessHours(ConfigurationError):
    """A business-hours configuration is invalid (e.g. ``schedule.monday[0].start``)."""


class UnknownTimeZone(ConfigurationError):
    """An IANA time zone name that zoneinfo cannot load."""

    def __init__(self, name: object, field: str = "timezone") -> None:
        super().__init__(field, name, "is not a known IANA time zone")
        self.name = name


class InvalidRetryPolicy(ConfigurationError):
    """A retry policy or backoff setting is invalid."""


class NaiveDatetimeError(OutdialError, ValueError):
    """A datetime without tzinfo was given where an instant is required."""

    def __init__(self, value: datetime, where: str = "") -> None:
        self.value = value
        self.where = where
        place = f" for {where}" if where else ""
        super().__init__(
            f"naive datetime {value.isoformat()}{place}: pass an aware datetime "
            "(e.g. datetime.now(timezone.utc))"
        )


# -- phone numbers and calling rules -------------------------------------------


class InvalidPhoneNumber(OutdialError, ValueError):
    """Text that is not a valid, dialable phone number."""

    def __init__(
        self,
        text: str,
        reason: str,
        *,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.text = text
        self.reason = reason
        self.row = row
        self.column = column
        where = ""
        if row is not None:
            where = f"row {row}" + (f", column {column!r}" if column else "") + ": "
        super().__init__(f"{where}{text!r} is not a valid phone number: {reason}")


class NoPermittedWindow(OutdialError, ValueError):
    """A number whose calling rules leave no time at which it may be called."""

    def __init__(self, number: str, reason: str, zones: Sequence[str] = ()) -> None:
        self.number = number
        self.reason = reason
        self.zones = tuple(zones)
        super().__init__(f"{number}: no permitted calling window ({reason})")


# -- state machines and the service ------------------------------------------------


class InvalidTransition(OutdialError, RuntimeError):
    """An action that the current state does not allow."""

    def __init__(self, state: object, action: object, kind: str = "campaign") -> None:
        self.state = state
        self.action = action
        self.kind = kind
        st = getattr(state, "value", state)
        ac = getattr(action, "value", action)
        super().__init__(f"cannot {ac} a {kind} that is {st}")


class Problem:
    """One problem found while validating: ``field`` and a human ``message``."""

    __slots__ = ("field", "message")

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message

    def __repr__(self) -> str:
        return f"Problem({self.field!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and (self.field, self.message) == (
            other.field,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.field, self.message))

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class CampaignValidationError(OutdialError, ValueError):
    """A campaign cannot be finalized or started; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "; ".join(str(p) for p in self.problems)
        super().__init__(f"campaign is not ready: {lines}")


class NotFound(OutdialError, LookupError):
    """No such object in this workspace (another workspace's objects are 'not found')."""

    def __init__(self, kind: str, id: object) -> None:
        self.kind = kind
        self.id = id
        super().__init__(f"{kind} {id!r} not found")


class DuplicateRecipient(OutdialError, ValueError):
    """The phone number is already a recipient of this campaign."""

    def __init__(self, campaign_id: str, phone_masked: str) -> None:
        self.campaign_id = campaign_id
        self.phone_masked = phone_masked
        super().__init__(f"{phone_masked} is already a recipient of campaign {campaign_id!r}")


# -- CSV import --------------------------------------------------------------------


class CsvImportError(OutdialError, ValueError):
    """A CSV file (or a row of it) cannot be imported."""

    def __init__(self, reason: str, *, row: int | None = None, column: str | None = None) -> None:
        self.reason = reason
        self.row = row
        self.column = column
        where = []
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + reason)


class CsvDecodeError(CsvImportError):
    """Bytes that are not UTF-8, reported with the row they are on."""


class MissingPhoneColumn(CsvImportError):
    """The header has none of the phone column aliases."""


class RowLimitExceeded(CsvImportError):
    """The import would take a campaign over its recipient limit."""

    def __init__(self, limit: int, existing: int, incoming: int) -> None:
        self.limit = limit
        self.existing = existing
        self.incoming = incoming
        super().__init__(
            f"importing {incoming} rows would give {existing + incoming} recipients, "
            f"over the limit of {limit}; nothing was imported"
        )


# -- providers and webhooks ------------------------------------------------------------


class ProviderError(OutdialError, RuntimeError):
    """A voice provider refused or failed a request.

    ``retryable`` says whether trying again later may succeed; ``retry_after``
    carries the provider's ``Retry-After`` when it sent one. ``placed`` is
    ``False`` when the provider certainly did not place the call (a fallback may
    then try another provider), ``None`` when that is unknown (e.g. a timeout).
    """

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        code: str | int | None = None,
        status_code: int | None = None,
        retryable: bool | None = None,
        retry_after: timedelta | None = None,
        placed: bool | None = False,
        outcome: Any = None,
        details: Any = None,
    ) -> None:
        self.provider = provider
        self.code = code
        self.status_code = status_code
        self.message = message
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after = retry_after
        self.placed = placed
        self.outcome = outcome  # a CallOutcome the refusal implies (e.g. invalid_number)
        self.details = details
        parts = [p for p in (provider, f"HTTP {status_code}" if status_code else "") if p]
        code_part = f" [{code}]" if code is not None else ""
        super().__init__(f"{' '.join(parts) + ': ' if parts else ''}{message}{code_part}")


class ProviderUnavailable(ProviderError):
    """5xx, timeout or connection failure: retry later."""

    default_retryable = True


class ProviderRateLimited(ProviderError):
    """429 or a concurrency limit: retry after ``retry_after``."""

    default_retryable = True


class ProviderRejected(ProviderError):
    """The provider refused the call for good (invalid number, permissions...)."""


class ProviderAuthError(ProviderError):
    """Credentials were refused (401/403)."""


class WebhookError(OutdialError, ValueError):
    """A webhook request was refused; nothing was changed."""

    def __init__(self, provider: str, reason: str) -> None:
        self.provider = provider
        self.reason = reason
        super().__init__(f"{provider} webhook refused: {reason}")


class WebhookVerificationError(WebhookError):
    """Forged, stale or unsigned webhook."""


class WebhookPayloadError(WebhookError):
    """A webhook body that cannot be parsed into a call event."""


# -- persistence ---------------------------------------------------------------------------


class ApplierClosed(OutdialError, RuntimeError):
    """An :class:`~outdial.group_commit.EventApplier` was asked to apply an event
    while not running, or stopped before the event was applied; the message says
    whether the event may have been applied."""


class RepositoryError(OutdialError, RuntimeError):
    """A storage operation failed."""


class StaleClaim(RepositoryError):
    """A write carried a fencing token that is no longer current (the lease was lost)."""

    def __init__(self, attempt_id: str, token: int | None = None) -> None:
        self.attempt_id = attempt_id
        self.token = token
        super().__init__(f"attempt {attempt_id!r}: claim token {token} is stale")


class StaleRead(RepositoryError):
    """A write found the stored row changed since the caller read it (another
    transaction moved it in between): nothing was written; read it again and decide
    again. ``kind`` is ``"recipient"`` or ``"campaign"``."""

    def __init__(self, kind: str, id: str, detail: str) -> None:
        self.kind = kind
        self.id = id
        super().__init__(f"{kind} {id!r} {detail}")


class DatabaseUnavailable(RepositoryError, ConnectionError):
    """The database URL is wrong or the server cannot be reached."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot use database {url}: {reason}")


class SchemaOutOfDate(RepositoryError):
    """The database schema is older (or newer) than this version of outdial."""

    def __init__(self, url: str, current: str | None, expected: str) -> None:
        self.url = url
        self.current = current
        self.expected = expected
        super().__init__(
            f"database {url} is at schema {current or 'none'}, outdial needs {expected}: "
            f"run `outdial db upgrade {url}`"
        )


class MissingExtra(OutdialError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, extra: str, module: str) -> None:
        self.extra = extra
        self.module = module
        super().__init__(f"{module} is needed for this feature: pip install 'outdial[{extra}]'")

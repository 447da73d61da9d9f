"""outdial: outbound calling campaigns as a library.

The public API is this module's ``__all__``; adapters live in optional
subpackages (:mod:`outdial.testing`, :mod:`outdial.simulation`,
:mod:`outdial.sql`, :mod:`outdial.providers`).
"""

from __future__ import annotations

from outdial.aio import AsyncDialer
from outdial.calendar import (
    ALWAYS_OPEN,
    BusinessHours,
    Calendar,
    CalendarIntersection,
    HolidayCalendar,
    TimeSlot,
    Weekday,
)
from outdial.campaign import (
    TRANSITIONS,
    AgentSettings,
    Campaign,
    CampaignAction,
    CampaignCounters,
    CampaignStatus,
    ScheduleType,
)
from outdial.compliance import CallingRule, RuleSet, get_rule_set, register_rule_set
from outdial.csv_import import (
    ImportReport,
    RowProblem,
    export_recipients_csv,
    import_recipients_csv,
    read_recipients_csv,
)
from outdial.dialer import Dialer, RunSummary
from outdial.engine import Engine, EngineConfig
from outdial.errors import (
    ApplierClosed,
    CampaignValidationError,
    ConfigurationError,
    CsvImportError,
    DuplicateRecipient,
    InvalidBusinessHours,
    InvalidPhoneNumber,
    InvalidRetryPolicy,
    InvalidTransition,
    MissingExtra,
    NaiveDatetimeError,
    NoPermittedWindow,
    NotFound,
    OutdialError,
    Problem,
    ProviderError,
    RepositoryError,
    RowLimitExceeded,
    UnknownTimeZone,
    WebhookError,
)
from outdial.events import (
    CallEnded,
    CallPlaced,
    CampaignStatusChanged,
    EventBus,
    ProgressUpdated,
    RecipientSkipped,
    RetryScheduled,
)
from outdial.group_commit import EventApplier
from outdial.outcomes import CallOutcome
from outdial.phone import PhoneNumberInfo, mask_phone, normalize_phone, parse_phone
from outdial.ports import (
    CallEvent,
    CallStatus,
    DialRequest,
    PlacedCall,
    SystemClock,
    WebhookRequest,
)
from outdial.recipient import Attempt, AttemptStatus, Recipient, RecipientStatus
from outdial.retry import (
    DailyCap,
    DecorrelatedJitter,
    Exponential,
    Final,
    Fixed,
    Jitter,
    RetryAt,
    RetryPolicy,
    RollingCap,
    land_in_window,
)
from outdial.service import CampaignService, CampaignStats, RecipientInput
from outdial.suppression import SuppressionList

__version__ = "0.1.0"

__all__ = [
    "ALWAYS_OPEN",
    "TRANSITIONS",
    "AgentSettings",
    "ApplierClosed",
    "AsyncDialer",
    "Attempt",
    "AttemptStatus",
    "BusinessHours",
    "Calendar",
    "CalendarIntersection",
    "CallEnded",
    "CallEvent",
    "CallOutcome",
    "CallPlaced",
    "CallStatus",
    "CallingRule",
    "Campaign",
    "CampaignAction",
    "CampaignCounters",
    "CampaignService",
    "CampaignStats",
    "CampaignStatus",
    "CampaignStatusChanged",
    "CampaignValidationError",
    "ConfigurationError",
    "CsvImportError",
    "DailyCap",
    "DecorrelatedJitter",
    "DialRequest",
    "Dialer",
    "DuplicateRecipient",
    "Engine",
    "EngineConfig",
    "EventApplier",
    "EventBus",
    "Exponential",
    "Final",
    "Fixed",
    "HolidayCalendar",
    "ImportReport",
    "InvalidBusinessHours",
    "InvalidPhoneNumber",
    "InvalidRetryPolicy",
    "InvalidTransition",
    "Jitter",
    "MissingExtra",
    "NaiveDatetimeError",
    "NoPermittedWindow",
    "NotFound",
    "OutdialError",
    "PhoneNumberInfo",
    "PlacedCall",
    "Problem",
    "ProgressUpdated",
    "ProviderError",
    "Recipient",
    "RecipientInput",
    "RecipientSkipped",
    "RecipientStatus",
    "RepositoryError",
    "RetryAt",
    "RetryPolicy",
    "RetryScheduled",
    "RollingCap",
    "RowLimitExceeded",
    "RowProblem",
    "RuleSet",
    "RunSummary",
    "ScheduleType",
    "SuppressionList",
    "SystemClock",
    "TimeSlot",
    "UnknownTimeZone",
    "WebhookError",
    "WebhookRequest",
    "Weekday",
    "__version__",
    "export_recipients_csv",
    "get_rule_set",
    "import_recipients_csv",
    "land_in_window",
    "mask_phone",
    "normalize_phone",
    "parse_phone",
    "read_recipients_csv",
    "register_rule_set",
]

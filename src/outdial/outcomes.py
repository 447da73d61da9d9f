"""Call outcomes: the common vocabulary every provider's results map onto."""

from __future__ import annotations

import enum

__all__ = ["DEFAULT_RETRYABLE_OUTCOMES", "CallOutcome"]


class CallOutcome(str, enum.Enum):
    """How one call attempt ended."""

    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    VOICEMAIL = "voicemail"
    INVALID_NUMBER = "invalid_number"
    DECLINED = "declined"
    ERROR = "error"
    OPTED_OUT = "opted_out"

    @property
    def connected(self) -> bool:
        """True when the call reached the callee (a person or their voicemail).

        A recipient whose last attempt connected ends ``completed``; otherwise a
        final outcome ends it ``failed``.
        """
        return self in _CONNECTED

    def __str__(self) -> str:
        return self.value


_CONNECTED = frozenset({CallOutcome.ANSWERED, CallOutcome.VOICEMAIL, CallOutcome.OPTED_OUT})

#: Outcomes retried by default; invalid_number, declined and opted_out never are.
DEFAULT_RETRYABLE_OUTCOMES: frozenset[CallOutcome] = frozenset(
    {CallOutcome.NO_ANSWER, CallOutcome.BUSY, CallOutcome.VOICEMAIL, CallOutcome.ERROR}
)

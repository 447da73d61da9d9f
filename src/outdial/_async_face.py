"""The asyncio face of an in-process provider (fakes and the simulator).

Such providers never block, so their async face simply calls the sync one and
shares its state; ``next_event_at`` / ``due_events`` stay synchronous, as the
:class:`~outdial.ports.EventSource` protocol has them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Protocol, TypeVar

from outdial.ports import CallEvent, DialRequest, PlacedCall


class _InProcess(Protocol):
    name: str

    def place_call(self, request: DialRequest) -> PlacedCall: ...
    def cancel_call(self, external_call_id: str) -> None: ...
    def fetch_call(self, *, attempt_id: str, external_call_id: str | None) -> CallEvent | None: ...
    def next_event_at(self) -> datetime | None: ...
    def due_events(self, now: datetime) -> list[CallEvent]: ...


P = TypeVar("P", bound=_InProcess)


class AsyncFace(Generic[P]):
    """An :class:`~outdial.ports.AsyncCallProvider` over the in-process provider
    :attr:`sync`, sharing its scripting, records and events."""

    def __init__(self, provider: P) -> None:
        self.sync = provider
        self.name = provider.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sync!r})"

    async def place_call(self, request: DialRequest) -> PlacedCall:
        return self.sync.place_call(request)

    async def cancel_call(self, external_call_id: str) -> None:
        self.sync.cancel_call(external_call_id)

    async def fetch_call(
        self, *, attempt_id: str, external_call_id: str | None
    ) -> CallEvent | None:
        return self.sync.fetch_call(attempt_id=attempt_id, external_call_id=external_call_id)

    def next_event_at(self) -> datetime | None:
        return self.sync.next_event_at()

    def due_events(self, now: datetime) -> list[CallEvent]:
        return self.sync.due_events(now)

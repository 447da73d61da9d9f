"""Test doubles that ship with outdial (as ``httpx.MockTransport`` or ``structlog.testing``).

- :class:`InMemoryRepository`: a complete :class:`~outdial.ports.Repository` in
  process memory, with real transactions (rollback on exception), counters kept
  equal to the recipients' states and a claim cost that does not grow with the
  campaign's size.
- :class:`FakeProvider` / :class:`AsyncFakeProvider`: scripted call providers
  (``provider.script(number, CallOutcome.BUSY, CallOutcome.ANSWERED)``) that
  record every request and produce the events a test feeds back.
- :class:`VirtualClock`: time that moves only when told to.
"""

from __future__ import annotations

from outdial.simulation.clock import VirtualClock
from outdial.testing.fake_provider import AsyncFakeProvider, FakeProvider, ScriptStep, UnknownFate
from outdial.testing.memory import InMemoryRepository, InMemoryUnitOfWork

__all__ = [
    "AsyncFakeProvider",
    "FakeProvider",
    "InMemoryRepository",
    "InMemoryUnitOfWork",
    "ScriptStep",
    "UnknownFate",
    "VirtualClock",
]

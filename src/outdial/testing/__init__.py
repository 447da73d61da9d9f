"""Test doubles that ship with outdial (as ``httpx.MockTransport`` or ``structlog.testing``).

- :class:`InMemoryRepository`: a complete :class:`~outdial.ports.Repository` in
  process memory, with real transactions (rollback on exception), counters kept
  equal to the recipients' states and a claim cost that does not grow with the
  campaign's size.
"""

from __future__ import annotations

from outdial.testing.memory import InMemoryRepository, InMemoryUnitOfWork

__all__ = ["InMemoryRepository", "InMemoryUnitOfWork"]

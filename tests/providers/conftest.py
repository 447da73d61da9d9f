"""Fixtures for the provider tests: the loopback fakes, started per test."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from .servers import FakeElevenLabs, FakeExotel, FakeRetell, FakeTwilio, FakeVapi


@pytest.fixture
def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def twilio_server() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def vapi_server() -> Iterator[FakeVapi]:
    with FakeVapi() as server:
        yield server


@pytest.fixture
def retell_server() -> Iterator[FakeRetell]:
    with FakeRetell() as server:
        yield server


@pytest.fixture
def elevenlabs_server() -> Iterator[FakeElevenLabs]:
    with FakeElevenLabs() as server:
        yield server


@pytest.fixture
def exotel_server() -> Iterator[FakeExotel]:
    with FakeExotel() as server:
        yield server

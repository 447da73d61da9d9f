"""What every adapter does the same way, checked against each provider's
loopback fake with both the sync and the async adapter: placing, fetching,
classifying failures (and whether the call may have been placed), Retry-After
and the calls-per-second limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from outdial.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
)
from outdial.ports import CallStatus
from outdial.providers import TokenBucket

from .cases import CASES, Case
from .servers import LoopbackServer, Reply, refused_url

MODES = ("sync", "async")


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def server(case: Case) -> Iterator[LoopbackServer]:
    with case.fake() as fake:
        yield fake


def call(case: Case, mode: str, server: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Run ``method`` on a fresh sync or async adapter pointed at ``server``.

    ``adapter`` in kwargs holds constructor keywords (timeout, rate_limit, base_url...).
    """
    adapter_kw = kwargs.pop("adapter", {})
    if mode == "sync":
        with case.sync(server, **adapter_kw) as provider:
            return getattr(provider, method)(*args, **kwargs)

    async def run() -> Any:
        async with case.async_(server, **adapter_kw) as provider:
            return await getattr(provider, method)(*args, **kwargs)

    return asyncio.run(run())


def place_error(case: Case, mode: str, server: Any, **adapter: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call(case, mode, server, "place_call", case.request(), adapter=adapter)
    return caught.value


@pytest.mark.parametrize("mode", MODES)
def test_a_placed_call_is_queued_under_the_providers_call_id(
    case: Case, server: Any, mode: str
) -> None:
    placed = call(case, mode, server, "place_call", case.request())
    assert placed.provider == case.name
    assert placed.status in (CallStatus.QUEUED, CallStatus.IN_PROGRESS)
    known = getattr(server, "calls", None) or server.conversations
    assert placed.external_call_id in known
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_429_is_rate_limited_with_retry_after_and_certainly_not_placed(
    case: Case, server: Any, mode: str
) -> None:
    server.inject(Reply(429, {"message": "Too many requests"}, {"Retry-After": "7"}))
    error = place_error(case, mode, server)
    assert isinstance(error, ProviderRateLimited)
    assert error.retryable is True
    assert error.placed is False
    assert error.retry_after == timedelta(seconds=7)
    assert error.status_code == 429
    assert error.provider == case.name


@pytest.mark.parametrize("mode", MODES)
def test_retry_after_as_an_http_date_is_measured_from_the_responses_date(
    case: Case, server: Any, mode: str
) -> None:
    server.inject(
        Reply(
            429,
            {"message": "slow down"},
            {
                "Date": "Mon, 02 Mar 2026 15:00:00 GMT",
                "Retry-After": "Mon, 02 Mar 2026 15:01:30 GMT",
            },
        )
    )
    assert place_error(case, mode, server).retry_after == timedelta(seconds=90)


@pytest.mark.parametrize("status", [500, 502, 503])
@pytest.mark.parametrize("mode", MODES)
def test_5xx_on_create_leaves_placement_unknown(
    case: Case, server: Any, mode: str, status: int
) -> None:
    server.inject(Reply(status, {"message": "upstream trouble"}))
    error = place_error(case, mode, server)
    assert isinstance(error, ProviderUnavailable)
    assert error.placed is None
    assert error.retryable is True
    assert error.status_code == status


@pytest.mark.parametrize("mode", MODES)
def test_a_read_timeout_after_sending_leaves_placement_unknown(
    case: Case, server: Any, mode: str
) -> None:
    server.inject(Reply(201, {}, delay=0.5))
    error = place_error(case, mode, server, timeout=httpx.Timeout(0.1))
    assert isinstance(error, ProviderUnavailable)
    assert error.placed is None
    assert error.code == "ReadTimeout"
    deadline = time.monotonic() + 5  # the server thread records the request on its own time
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.requests) == 1  # the provider did receive it


@pytest.mark.parametrize("mode", MODES)
def test_a_dropped_connection_leaves_placement_unknown(case: Case, server: Any, mode: str) -> None:
    server.inject(Reply(drop=True))
    error = place_error(case, mode, server)
    assert isinstance(error, ProviderUnavailable)
    assert error.placed is None


@pytest.mark.parametrize("mode", MODES)
def test_a_refused_connection_is_certainly_not_placed(case: Case, server: Any, mode: str) -> None:
    error = place_error(case, mode, server, base_url=refused_url())
    assert isinstance(error, ProviderUnavailable)
    assert error.placed is False
    assert error.retryable is True
    assert server.requests == []


@pytest.mark.parametrize("mode", MODES)
def test_a_2xx_without_a_call_id_leaves_placement_unknown(
    case: Case, server: Any, mode: str
) -> None:
    server.inject(Reply(200, {"unexpected": True}))
    error = place_error(case, mode, server)
    assert isinstance(error, ProviderUnavailable)
    assert error.placed is None


@pytest.mark.parametrize("mode", MODES)
def test_refused_credentials_are_an_auth_error_and_not_placed(
    case: Case, server: Any, mode: str
) -> None:
    server.revoked = True
    error = place_error(case, mode, server)
    assert isinstance(error, ProviderAuthError)
    assert error.status_code == 401
    assert error.retryable is False
    assert error.placed is False


@pytest.mark.parametrize("mode", MODES)
def test_fetch_reports_the_providers_view_of_a_placed_call(
    case: Case, server: Any, mode: str
) -> None:
    placed = call(case, mode, server, "place_call", case.request())
    event = call(
        case,
        mode,
        server,
        "fetch_call",
        attempt_id="att-0001",
        external_call_id=placed.external_call_id,
    )
    assert event.provider == case.name
    assert event.external_call_id == placed.external_call_id
    assert event.attempt_id == "att-0001"
    assert not event.final
    assert event.outcome is None


@pytest.mark.parametrize("mode", MODES)
def test_fetch_of_a_call_the_provider_does_not_have_is_none(
    case: Case, server: Any, mode: str
) -> None:
    event = call(case, mode, server, "fetch_call", attempt_id="a", external_call_id="nope")
    assert event is None


@pytest.mark.parametrize("mode", MODES)
def test_fetch_without_a_call_id_cannot_tell(case: Case, server: Any, mode: str) -> None:
    with pytest.raises(ProviderError) as caught:
        call(case, mode, server, "fetch_call", attempt_id="a", external_call_id=None)
    assert caught.value.placed is None
    assert caught.value.code == "cannot_tell"
    assert server.requests == []


@pytest.mark.parametrize("mode", MODES)
def test_fetch_that_fails_cannot_tell(case: Case, server: Any, mode: str) -> None:
    server.inject(Reply(500, {"message": "boom"}))
    with pytest.raises(ProviderUnavailable) as caught:
        call(case, mode, server, "fetch_call", attempt_id="a", external_call_id="x")
    assert caught.value.placed is None


@pytest.mark.parametrize("mode", MODES)
def test_a_404_that_is_not_the_providers_own_is_not_taken_for_no_such_call(
    case: Case, server: Any, mode: str
) -> None:
    server.inject(Reply(404, b"<html>nginx: not found</html>"))
    if case.name == "twilio":  # Twilio's own 404 carries code 20404; this one does not
        with pytest.raises(ProviderError):
            call(case, mode, server, "fetch_call", attempt_id="a", external_call_id="x")
    else:
        assert call(case, mode, server, "fetch_call", attempt_id="a", external_call_id="x") is None


@pytest.mark.parametrize("mode", MODES)
def test_the_calls_per_second_limit_spaces_placements(case: Case, server: Any, mode: str) -> None:
    waits: list[float] = []

    async def async_sleep(seconds: float) -> None:
        waits.append(seconds)

    bucket = TokenBucket(2.0, clock=lambda: 100.0, sleep=waits.append, async_sleep=async_sleep)
    for _ in range(3):
        call(case, mode, server, "place_call", case.request(), adapter={"rate_limit": bucket})
    assert waits == [0.5, 1.0]
    assert len(server.requests) == 3


@pytest.mark.parametrize("mode", MODES)
def test_a_fetch_answer_without_a_status_cannot_tell(case: Case, server: Any, mode: str) -> None:
    server.inject(Reply(200, {"Call": {}, "unexpected": True}))
    with pytest.raises(ProviderError) as caught:
        call(case, mode, server, "fetch_call", attempt_id="a", external_call_id="x")
    assert (caught.value.code, caught.value.placed) == ("cannot_tell", None)

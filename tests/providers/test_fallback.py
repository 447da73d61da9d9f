"""FallbackProvider: the secondary dials only when the primary certainly did not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from outdial.campaign import AgentSettings
from outdial.errors import ProviderError, ProviderUnavailable
from outdial.providers import (
    AsyncFallbackProvider,
    AsyncTwilioProvider,
    AsyncVapiProvider,
    FallbackProvider,
    TwilioProvider,
    VapiProvider,
    fallback_agent,
)

from .cases import dial
from .servers import FakeTwilio, FakeVapi, Reply, refused_url

AGENT = AgentSettings(
    provider="vapi",
    external_agent_id="asst-1",
    phone_number_id="pn-1",
    phone_number="+12125550100",
    fallback_provider="twilio",
    options={
        "fallback.phone_number": "+12125550199",
        "fallback.url": "https://app.example/twiml",
    },
)


@pytest.fixture
def servers() -> Iterator[tuple[FakeVapi, FakeTwilio]]:
    with FakeVapi() as vapi, FakeTwilio() as twilio:
        yield vapi, twilio


def fallback(vapi: FakeVapi, twilio: FakeTwilio, **primary_kw: object) -> FallbackProvider:
    kw: dict[str, object] = {"base_url": vapi.url, **primary_kw}
    return FallbackProvider(
        VapiProvider(vapi.api_key, **kw),  # type: ignore[arg-type]
        TwilioProvider(twilio.account_sid, twilio.auth_token, base_url=twilio.url),
    )


def test_the_secondary_gets_its_own_agent_settings_from_fallback_options() -> None:
    secondary = fallback_agent(AGENT)
    assert secondary.provider == "twilio"
    assert secondary.fallback_provider is None
    assert secondary.phone_number == "+12125550199"
    assert secondary.external_agent_id == "asst-1"  # not overridden
    assert dict(secondary.options) == {"url": "https://app.example/twiml"}


def test_a_placed_primary_call_never_touches_the_secondary(
    servers: tuple[FakeVapi, FakeTwilio],
) -> None:
    vapi, twilio = servers
    with fallback(vapi, twilio) as provider:
        placed = provider.place_call(dial(AGENT))
    assert placed.provider == "vapi"
    assert twilio.requests == []


@pytest.mark.parametrize(
    "reply",
    [
        Reply(400, {"message": "Over Concurrency Limit."}),
        Reply(401, {"message": "Invalid Key"}),
        Reply(429, {"message": "slow down"}, {"Retry-After": "3"}),
    ],
    ids=["concurrency", "auth", "429"],
)
def test_a_primary_that_certainly_did_not_place_hands_over_to_the_secondary(
    servers: tuple[FakeVapi, FakeTwilio], reply: Reply
) -> None:
    vapi, twilio = servers
    vapi.inject(reply)
    with fallback(vapi, twilio) as provider:
        placed = provider.place_call(dial(AGENT))
    assert placed.provider == "twilio"
    form = twilio.last.form()
    assert form["From"] == ["+12125550199"]
    assert form["Url"][0].startswith("https://app.example/twiml?attempt_id=att-0001")


def test_a_refused_connection_to_the_primary_hands_over(
    servers: tuple[FakeVapi, FakeTwilio],
) -> None:
    vapi, twilio = servers
    with fallback(vapi, twilio, base_url=refused_url()) as provider:
        assert provider.place_call(dial(AGENT)).provider == "twilio"


@pytest.mark.parametrize(
    ("reply", "timeout"),
    [
        (Reply(503, {"message": "down"}), 5.0),
        (Reply(201, {}, delay=0.5), 0.1),
        (Reply(drop=True), 5.0),
    ],
    ids=["5xx", "read-timeout", "dropped"],
)
def test_an_unknown_fate_is_raised_and_never_dialled_twice(
    servers: tuple[FakeVapi, FakeTwilio], reply: Reply, timeout: float
) -> None:
    vapi, twilio = servers
    vapi.inject(reply)
    with (
        fallback(vapi, twilio, timeout=httpx.Timeout(timeout)) as provider,
        pytest.raises(ProviderUnavailable) as caught,
    ):
        provider.place_call(dial(AGENT))
    assert caught.value.placed is None
    assert caught.value.provider == "vapi"
    assert twilio.requests == []


def test_when_both_refuse_the_secondarys_error_is_raised(
    servers: tuple[FakeVapi, FakeTwilio],
) -> None:
    vapi, twilio = servers
    vapi.inject(Reply(401, {"message": "Invalid Key"}))
    twilio.inject(Reply(503, {"code": 20500, "message": "Internal"}))
    with fallback(vapi, twilio) as provider, pytest.raises(ProviderError) as caught:
        provider.place_call(dial(AGENT))
    assert (caught.value.provider, caught.value.placed) == ("twilio", None)


def test_async_fallback_behaves_the_same(servers: tuple[FakeVapi, FakeTwilio]) -> None:
    vapi, twilio = servers

    async def scenario() -> tuple[str, ProviderError]:
        async with AsyncFallbackProvider(
            AsyncVapiProvider(vapi.api_key, base_url=vapi.url),
            AsyncTwilioProvider(twilio.account_sid, twilio.auth_token, base_url=twilio.url),
        ) as provider:
            vapi.inject(Reply(400, {"message": "Over Concurrency Limit."}))
            handed_over = await provider.place_call(dial(AGENT))
            vapi.inject(Reply(502, {"message": "bad gateway"}))
            with pytest.raises(ProviderError) as caught:
                await provider.place_call(dial(AGENT, attempt_id="att-0002"))
        return handed_over.provider, caught.value

    provider_name, unknown = asyncio.run(scenario())
    assert provider_name == "twilio"
    assert unknown.placed is None
    assert len(twilio.requests) == 1


def test_fetch_finds_the_call_at_whichever_provider_placed_it(
    servers: tuple[FakeVapi, FakeTwilio],
) -> None:
    vapi, twilio = servers
    vapi.inject(Reply(400, {"message": "Over Concurrency Limit."}))
    with fallback(vapi, twilio) as provider:
        sid = provider.place_call(dial(AGENT)).external_call_id
        found = provider.fetch_call(attempt_id="att-0001", external_call_id=sid)
        nowhere = provider.fetch_call(attempt_id="att-0001", external_call_id="CAnothing")
        vapi.inject(Reply(500, {"message": "down"}))
        with pytest.raises(ProviderUnavailable):  # vapi could not tell, twilio has none
            provider.fetch_call(attempt_id="att-0001", external_call_id="CAnothing")
    assert found is not None
    assert (found.provider, found.external_call_id) == ("twilio", sid)
    assert nowhere is None


def test_cancel_reaches_the_provider_that_has_the_call(
    servers: tuple[FakeVapi, FakeTwilio],
) -> None:
    vapi, twilio = servers
    vapi.inject(Reply(400, {"message": "Over Concurrency Limit."}))
    with fallback(vapi, twilio) as provider:
        sid = provider.place_call(dial(AGENT)).external_call_id
        provider.cancel_call(sid)
    assert twilio.calls[sid]["status"] == "canceled"

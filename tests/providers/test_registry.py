"""Choosing a provider from AgentSettings, validating agents, and building adapters
from environment variables."""

from __future__ import annotations

import asyncio

import attrs
import pytest

from outdial.campaign import AgentSettings
from outdial.errors import CampaignValidationError, ConfigurationError, Problem
from outdial.providers import (
    AsyncFallbackProvider,
    AsyncVapiProvider,
    ElevenLabsProvider,
    ExotelProvider,
    FallbackProvider,
    RetellProvider,
    TwilioProvider,
    VapiProvider,
    async_provider_for,
    async_registry_from_env,
    provider_for,
    registry_from_env,
    validate_agent,
)

ENV = {
    "TWILIO_ACCOUNT_SID": "AC1",
    "TWILIO_AUTH_TOKEN": "tok",
    "TWILIO_STATUS_CALLBACK_URL": "https://app.example/twilio",
    "VAPI_API_KEY": "vk",
    "RETELL_API_KEY": "rk",
    "ELEVENLABS_API_KEY": "xk",
    "EXOTEL_ACCOUNT_SID": "exo",
    "EXOTEL_AUTH_KEY": "ek",  # the seed's names are accepted too
    "EXOTEL_AUTH_TOKEN": "et",
    "EXOTEL_SUBDOMAIN": "api.in.exotel.com",
}

VAPI_AGENT = AgentSettings(provider="vapi", external_agent_id="asst", phone_number_id="pn")


def fields(problems: list[Problem]) -> list[str]:
    return [p.field for p in problems]


def test_an_agent_without_a_provider_is_refused() -> None:
    assert validate_agent(AgentSettings()) == [
        Problem("agent.provider", "no agent/provider selected")
    ]


@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        (AgentSettings(provider="vapi"), ["agent.external_agent_id", "agent.phone_number_id"]),
        (
            AgentSettings(provider="elevenlabs"),
            ["agent.external_agent_id", "agent.phone_number_id"],
        ),
        (AgentSettings(provider="retell"), ["agent.phone_number"]),
        (AgentSettings(provider="twilio"), ["agent.phone_number", "agent.options"]),
        (AgentSettings(provider="exotel"), ["agent.phone_number", "agent.external_agent_id"]),
        (AgentSettings(provider="crm-dialer"), ["agent.external_agent_id", "agent.phone_number"]),
        (AgentSettings(provider="simulated"), []),
        (VAPI_AGENT, []),
        (AgentSettings(provider="retell", phone_number="+12125550100"), []),
        (AgentSettings(provider="exotel", phone_number="08047112233", external_agent_id="42"), []),
    ],
)
def test_each_provider_names_what_its_agent_lacks(
    agent: AgentSettings, expected: list[str]
) -> None:
    assert fields(validate_agent(agent)) == expected


def test_a_caller_id_that_is_not_a_phone_number_is_a_problem() -> None:
    agent = AgentSettings(provider="retell", phone_number="+1 555 0100")
    (problem,) = validate_agent(agent)
    assert problem.field == "agent.phone_number"
    assert problem.message.startswith("not a valid caller id")


def test_a_provider_missing_from_the_registry_is_a_problem() -> None:
    problems = validate_agent(VAPI_AGENT, {"twilio": object()})
    assert problems == [
        Problem("agent.provider", "no 'vapi' provider is configured (configured: twilio)")
    ]


def test_the_fallback_is_checked_with_its_own_settings() -> None:
    agent = AgentSettings(
        provider="vapi",
        external_agent_id="asst",
        phone_number_id="pn",
        fallback_provider="twilio",
        options={"fallback.url": "https://app.example/twiml"},
    )
    (problem,) = validate_agent(agent)
    assert problem.field == "agent.options.fallback.phone_number"
    assert problem.message.endswith("(fallback)")
    same = attrs.evolve(VAPI_AGENT, fallback_provider="vapi")
    assert fields(validate_agent(same)) == ["agent.fallback_provider"]


def test_provider_for_returns_the_agents_provider() -> None:
    registry = registry_from_env(ENV)
    assert provider_for(VAPI_AGENT, registry) is registry["vapi"]


def test_provider_for_wraps_a_fallback() -> None:
    registry = registry_from_env(ENV)
    agent = AgentSettings(
        provider="vapi",
        external_agent_id="asst",
        phone_number_id="pn",
        phone_number="+12125550100",
        fallback_provider="retell",
    )
    chosen = provider_for(agent, registry)
    assert isinstance(chosen, FallbackProvider)
    assert (chosen.primary, chosen.secondary) == (registry["vapi"], registry["retell"])


def test_provider_for_refuses_with_every_problem_listed() -> None:
    with pytest.raises(CampaignValidationError) as caught:
        provider_for(AgentSettings(provider="vapi"), registry_from_env(ENV))
    assert fields(list(caught.value.problems)) == [
        "agent.external_agent_id",
        "agent.phone_number_id",
    ]
    assert "assistant id" in str(caught.value)


def test_async_provider_for_builds_async_fallbacks() -> None:
    registry = async_registry_from_env(ENV)
    agent = AgentSettings(
        provider="vapi",
        external_agent_id="asst",
        phone_number_id="pn",
        fallback_provider="elevenlabs",
        options={"fallback.external_agent_id": "agent_11", "fallback.phone_number_id": "ph"},
    )
    chosen = async_provider_for(agent, registry)
    assert isinstance(chosen, AsyncFallbackProvider)
    assert isinstance(chosen.primary, AsyncVapiProvider)

    async def close() -> None:
        for provider in registry.values():
            await provider.aclose()  # type: ignore[attr-defined]

    asyncio.run(close())


def test_registry_from_env_builds_every_configured_provider() -> None:
    registry = registry_from_env(ENV)
    assert {name: type(p) for name, p in registry.items()} == {
        "twilio": TwilioProvider,
        "vapi": VapiProvider,
        "retell": RetellProvider,
        "elevenlabs": ElevenLabsProvider,
        "exotel": ExotelProvider,
    }
    assert registry["exotel"].base_url == "https://api.in.exotel.com"  # type: ignore[attr-defined]
    assert registry["twilio"].status_callback_url == "https://app.example/twilio"  # type: ignore[attr-defined]
    assert registry_from_env({"VAPI_API_KEY": "k"}).keys() == {"vapi"}


def test_a_half_configured_provider_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="auth_token"):
        registry_from_env({"TWILIO_ACCOUNT_SID": "AC1"})
    with pytest.raises(ConfigurationError, match="EXOTEL_API_KEY"):
        ExotelProvider.from_env(environ={"EXOTEL_ACCOUNT_SID": "x"})


def test_from_env_takes_a_prefix() -> None:
    provider = VapiProvider.from_env(prefix="SECOND_VAPI_", environ={"SECOND_VAPI_API_KEY": "k2"})
    assert provider.base_url == "https://api.vapi.ai"


@pytest.mark.parametrize(
    ("cls", "prefix", "default_url"),
    [
        (VapiProvider, "VAPI_", "https://api.vapi.ai"),
        (RetellProvider, "RETELL_", "https://api.retellai.com"),
        (ElevenLabsProvider, "ELEVENLABS_", "https://api.elevenlabs.io"),
    ],
)
def test_an_api_key_provider_reads_its_key_and_base_url_from_env(
    cls: type[VapiProvider] | type[RetellProvider] | type[ElevenLabsProvider],
    prefix: str,
    default_url: str,
) -> None:
    assert cls.from_env(environ={f"{prefix}API_KEY": "k"}).base_url == default_url
    # an empty base URL is unset, not a URL
    empty = {f"{prefix}API_KEY": "k", f"{prefix}BASE_URL": ""}
    assert cls.from_env(environ=empty).base_url == default_url
    moved = {f"{prefix}API_KEY": "k", f"{prefix}BASE_URL": "http://127.0.0.1:8080"}
    assert cls.from_env(environ=moved).base_url == "http://127.0.0.1:8080"
    for missing in ({}, {f"{prefix}API_KEY": ""}):
        with pytest.raises(ConfigurationError, match=f"{prefix}API_KEY"):
            cls.from_env(environ=missing)

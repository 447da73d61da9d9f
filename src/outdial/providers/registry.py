"""Choosing a provider for an agent, as the seeds do, and building adapters from
environment variables.

:func:`validate_agent` lists what an agent lacks for its provider (the campaign
service calls it at finalize and at start); :func:`provider_for` returns the
provider to dial with, wrapped in a :class:`FallbackProvider` when the agent
names a ``fallback_provider``, or refuses with
:class:`~outdial.errors.CampaignValidationError` listing every problem.

A registry is a plain mapping from provider name to adapter.
:func:`registry_from_env` builds one from ``TWILIO_*``, ``VAPI_*``,
``RETELL_*``, ``ELEVENLABS_*`` and ``EXOTEL_*`` variables; the library reads the
environment nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from outdial.campaign import AgentSettings
from outdial.errors import CampaignValidationError, Problem
from outdial.phone import normalize_phone
from outdial.ports import AsyncCallProvider, CallProvider
from outdial.providers import elevenlabs, exotel, retell, twilio, vapi
from outdial.providers.fallback import AsyncFallbackProvider, FallbackProvider, fallback_agent

__all__ = [
    "AGENT_CHECKS",
    "LOCAL_PROVIDERS",
    "async_provider_for",
    "async_registry_from_env",
    "provider_for",
    "registry_from_env",
    "validate_agent",
]

#: Provider name -> what an agent needs for it (each provider module says).
AGENT_CHECKS: Mapping[str, Callable[[AgentSettings], list[Problem]]] = {
    "twilio": twilio.agent_problems,
    "vapi": vapi.agent_problems,
    "retell": retell.agent_problems,
    "elevenlabs": elevenlabs.agent_problems,
    "exotel": exotel.agent_problems,
}

#: Providers that dial nobody (simulation, tests): no agent requirements.
LOCAL_PROVIDERS = frozenset({"simulated", "fake"})

_REGION = {"exotel": "IN"}  # numbers written nationally are Indian for Exotel

_SYNC: Mapping[str, tuple[Any, str]] = {
    "twilio": (twilio.TwilioProvider, "TWILIO_ACCOUNT_SID"),
    "vapi": (vapi.VapiProvider, "VAPI_API_KEY"),
    "retell": (retell.RetellProvider, "RETELL_API_KEY"),
    "elevenlabs": (elevenlabs.ElevenLabsProvider, "ELEVENLABS_API_KEY"),
    "exotel": (exotel.ExotelProvider, "EXOTEL_ACCOUNT_SID"),
}
_ASYNC: Mapping[str, tuple[Any, str]] = {
    "twilio": (twilio.AsyncTwilioProvider, "TWILIO_ACCOUNT_SID"),
    "vapi": (vapi.AsyncVapiProvider, "VAPI_API_KEY"),
    "retell": (retell.AsyncRetellProvider, "RETELL_API_KEY"),
    "elevenlabs": (elevenlabs.AsyncElevenLabsProvider, "ELEVENLABS_API_KEY"),
    "exotel": (exotel.AsyncExotelProvider, "EXOTEL_ACCOUNT_SID"),
}


def _provider_problems(
    agent: AgentSettings, name: str, registry: Mapping[str, object] | None, field: str
) -> list[Problem]:
    if name in LOCAL_PROVIDERS:
        return []
    if registry is not None and name not in registry:
        known = ", ".join(sorted(registry)) or "none"
        return [Problem(field, f"no {name!r} provider is configured (configured: {known})")]
    check = AGENT_CHECKS.get(name)
    if check is None:  # a provider of the application's own: the seeds' checks
        problems = []
        if not agent.external_agent_id:
            problems.append(
                Problem("agent.external_agent_id", "agent is not synced to the provider")
            )
        if not agent.phone_number and not agent.phone_number_id:
            problems.append(Problem("agent.phone_number", "agent has no phone number assigned"))
        return problems
    problems = check(agent)
    if agent.phone_number and not any(p.field == "agent.phone_number" for p in problems):
        try:
            normalize_phone(agent.phone_number, _REGION.get(name))
        except ValueError as exc:
            reason = getattr(exc, "reason", str(exc))
            problems.append(Problem("agent.phone_number", f"not a valid caller id: {reason}"))
    return problems


def validate_agent(
    agent: AgentSettings, registry: Mapping[str, object] | None = None
) -> list[Problem]:
    """Every reason ``agent`` cannot dial (empty when it can).

    Checks the provider is named (and configured, when a ``registry`` is given),
    the provider's own needs (an assistant/agent id where the provider needs
    one, a caller id or phone number id, Twilio's TwiML), that the caller id is
    a valid number, and the same for the fallback provider with the agent
    :func:`~outdial.providers.fallback.fallback_agent` gives it. The fallback's
    problems name ``agent.options.fallback.<field>``.
    """
    if not agent.provider:
        return [Problem("agent.provider", "no agent/provider selected")]
    problems = _provider_problems(agent, agent.provider, registry, "agent.provider")
    if agent.fallback_provider:
        if agent.fallback_provider == agent.provider:
            problems.append(
                Problem("agent.fallback_provider", "is the same provider as agent.provider")
            )
        else:
            secondary = fallback_agent(agent)
            for problem in _provider_problems(
                secondary, agent.fallback_provider, registry, "agent.fallback_provider"
            ):
                field = problem.field
                if field.startswith("agent.") and field != "agent.fallback_provider":
                    field = "agent.options.fallback." + field[len("agent.") :]
                problems.append(Problem(field, f"{problem.message} (fallback)"))
    return problems


def provider_for(agent: AgentSettings, registry: Mapping[str, CallProvider]) -> CallProvider:
    """The provider to dial ``agent``'s calls with (a :class:`FallbackProvider`
    when it names a fallback); :class:`CampaignValidationError` listing every
    problem otherwise."""
    problems = validate_agent(agent, registry)
    if problems:
        raise CampaignValidationError(problems)
    assert agent.provider is not None  # validate_agent refuses an agent without one
    primary = registry[agent.provider]
    if agent.fallback_provider:
        return FallbackProvider(primary, registry[agent.fallback_provider])
    return primary


def async_provider_for(
    agent: AgentSettings, registry: Mapping[str, AsyncCallProvider]
) -> AsyncCallProvider:
    """The asyncio twin of :func:`provider_for`."""
    problems = validate_agent(agent, registry)
    if problems:
        raise CampaignValidationError(problems)
    assert agent.provider is not None
    primary = registry[agent.provider]
    if agent.fallback_provider:
        return AsyncFallbackProvider(primary, registry[agent.fallback_provider])
    return primary


def _from_env(
    table: Mapping[str, tuple[Any, str]], environ: Mapping[str, str] | None, **kw: Any
) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    return {
        name: cls.from_env(environ=env, **kw)
        for name, (cls, marker) in table.items()
        if env.get(marker)
    }


def registry_from_env(
    environ: Mapping[str, str] | None = None, **kw: Any
) -> dict[str, CallProvider]:
    """A synchronous adapter for every provider whose key variable is set
    (``TWILIO_ACCOUNT_SID``, ``VAPI_API_KEY``, ``RETELL_API_KEY``,
    ``ELEVENLABS_API_KEY``, ``EXOTEL_ACCOUNT_SID``); ``kw`` (``timeout=``,
    ``rate_limit=``...) goes to every adapter."""
    return _from_env(_SYNC, environ, **kw)


def async_registry_from_env(
    environ: Mapping[str, str] | None = None, **kw: Any
) -> dict[str, AsyncCallProvider]:
    """The asyncio twin of :func:`registry_from_env`."""
    return _from_env(_ASYNC, environ, **kw)

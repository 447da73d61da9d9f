"""A primary provider, then a secondary one: never a double dial.

:class:`FallbackProvider` (and its asyncio twin) places a call with the primary
and turns to the secondary only when the primary raised a
:class:`~outdial.errors.ProviderError` whose ``placed`` is ``False``: the
primary certainly did not create the call (a 4xx answer, a refused
connection). When ``placed`` is ``None`` (a timeout after the request was sent,
a 5xx on create) the primary may well be ringing the recipient, so the error is
raised as it is and the attempt goes to reconciliation: trying the secondary
then could dial the same person twice.

The secondary usually needs its own agent id and caller id. They come from the
agent's options under a ``fallback.`` prefix (``fallback.external_agent_id``,
``fallback.phone_number``, ``fallback.phone_number_id``, and any
``fallback.<option>`` for the secondary's options); see :func:`fallback_agent`.
"""

from __future__ import annotations

import attrs
import structlog

from outdial.campaign import AgentSettings
from outdial.errors import ProviderError
from outdial.phone import mask_phone
from outdial.ports import AsyncCallProvider, CallEvent, CallProvider, DialRequest, PlacedCall

__all__ = ["AsyncFallbackProvider", "FallbackProvider", "fallback_agent", "fallback_request"]

log = structlog.get_logger("outdial.providers")

PREFIX = "fallback."
_FIELDS = ("external_agent_id", "phone_number", "phone_number_id")


def fallback_agent(agent: AgentSettings) -> AgentSettings:
    """The agent settings the secondary provider sees.

    ``provider`` becomes ``agent.fallback_provider``; ``external_agent_id``,
    ``phone_number`` and ``phone_number_id`` are replaced by the
    ``fallback.``-prefixed options when present; other ``fallback.<name>``
    options replace ``<name>``.
    """
    options = {k: v for k, v in agent.options.items() if not k.startswith(PREFIX)}
    changes: dict[str, str | None] = {}
    for key, value in agent.options.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        if name in _FIELDS:
            changes[name] = value
        else:
            options[name] = value
    return attrs.evolve(
        agent,
        provider=agent.fallback_provider or agent.provider,
        fallback_provider=None,
        options=options,
        **changes,
    )


def fallback_request(request: DialRequest) -> DialRequest:
    """``request`` as the secondary provider gets it (agent from :func:`fallback_agent`;
    the caller id follows the fallback phone number when one is set)."""
    agent = fallback_agent(request.agent)
    caller = request.caller_id
    if PREFIX + "phone_number" in request.agent.options:
        caller = agent.phone_number
    return attrs.evolve(request, agent=agent, caller_id=caller)


def _log_switch(primary: str, secondary: str, request: DialRequest, exc: ProviderError) -> None:
    log.warning(
        "provider_fallback",
        primary=primary,
        secondary=secondary,
        attempt=request.attempt_id,
        to=mask_phone(request.to),
        error=str(exc),
    )


class FallbackProvider:
    """Place with ``primary``; on an error with ``placed is False`` only, with
    ``secondary`` (a :class:`~outdial.ports.CallProvider`).

    ``PlacedCall.provider`` names the provider that placed the call.
    ``fetch_call`` asks the primary, then the secondary unless the primary found
    the call; it returns None only when both say they have no such call, and
    re-raises the primary's error when only the primary could not tell.
    ``cancel_call`` tries the primary, then (on a ``ProviderError``) the secondary.
    """

    def __init__(self, primary: CallProvider, secondary: CallProvider) -> None:
        self.primary = primary
        self.secondary = secondary
        self.name = f"{primary.name}+{secondary.name}"

    def __repr__(self) -> str:
        return f"FallbackProvider({self.primary!r}, {self.secondary!r})"

    def close(self) -> None:
        """Close both providers (those that have a ``close``)."""
        for provider in (self.primary, self.secondary):
            close = getattr(provider, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> FallbackProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def place_call(self, request: DialRequest) -> PlacedCall:
        try:
            return self.primary.place_call(request)
        except ProviderError as exc:
            if exc.placed is not False:
                raise
            _log_switch(self.primary.name, self.secondary.name, request, exc)
        return self.secondary.place_call(fallback_request(request))

    def cancel_call(self, external_call_id: str) -> None:
        try:
            self.primary.cancel_call(external_call_id)
        except ProviderError:
            self.secondary.cancel_call(external_call_id)

    def fetch_call(self, *, attempt_id: str, external_call_id: str | None) -> CallEvent | None:
        primary_error: ProviderError | None = None
        try:
            found = self.primary.fetch_call(
                attempt_id=attempt_id, external_call_id=external_call_id
            )
        except ProviderError as exc:
            found, primary_error = None, exc
        if found is not None:
            return found
        found = self.secondary.fetch_call(attempt_id=attempt_id, external_call_id=external_call_id)
        if found is None and primary_error is not None:
            raise primary_error  # the primary could not tell: neither can we
        return found


class AsyncFallbackProvider:
    """The asyncio twin of :class:`FallbackProvider` (:class:`~outdial.ports.AsyncCallProvider`)."""

    def __init__(self, primary: AsyncCallProvider, secondary: AsyncCallProvider) -> None:
        self.primary = primary
        self.secondary = secondary
        self.name = f"{primary.name}+{secondary.name}"

    def __repr__(self) -> str:
        return f"AsyncFallbackProvider({self.primary!r}, {self.secondary!r})"

    async def aclose(self) -> None:
        """Close both providers (those that have an ``aclose``)."""
        for provider in (self.primary, self.secondary):
            aclose = getattr(provider, "aclose", None)
            if callable(aclose):
                await aclose()

    async def __aenter__(self) -> AsyncFallbackProvider:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def place_call(self, request: DialRequest) -> PlacedCall:
        try:
            return await self.primary.place_call(request)
        except ProviderError as exc:
            if exc.placed is not False:
                raise
            _log_switch(self.primary.name, self.secondary.name, request, exc)
        return await self.secondary.place_call(fallback_request(request))

    async def cancel_call(self, external_call_id: str) -> None:
        try:
            await self.primary.cancel_call(external_call_id)
        except ProviderError:
            await self.secondary.cancel_call(external_call_id)

    async def fetch_call(
        self, *, attempt_id: str, external_call_id: str | None
    ) -> CallEvent | None:
        primary_error: ProviderError | None = None
        try:
            found = await self.primary.fetch_call(
                attempt_id=attempt_id, external_call_id=external_call_id
            )
        except ProviderError as exc:
            found, primary_error = None, exc
        if found is not None:
            return found
        found = await self.secondary.fetch_call(
            attempt_id=attempt_id, external_call_id=external_call_id
        )
        if found is None and primary_error is not None:
            raise primary_error  # the primary could not tell: neither can we
        return found

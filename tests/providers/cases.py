"""One description per provider, so behaviour every adapter shares (error
classification, timeouts, Retry-After, fetch and rate limits) is tested once,
against each provider's loopback fake, with the sync and the async adapter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from outdial.campaign import AgentSettings
from outdial.ports import DialRequest
from outdial.providers import (
    AsyncElevenLabsProvider,
    AsyncExotelProvider,
    AsyncRetellProvider,
    AsyncTwilioProvider,
    AsyncVapiProvider,
    ElevenLabsProvider,
    ExotelProvider,
    RetellProvider,
    TwilioProvider,
    VapiProvider,
)

from .servers import (
    FakeElevenLabs,
    FakeExotel,
    FakeRetell,
    FakeTwilio,
    FakeVapi,
    LoopbackServer,
)

CALLBACK = "https://app.example/webhooks"


def dial(agent: AgentSettings, **changes: Any) -> DialRequest:
    """A dial request for ``agent`` (recipient +1 212 555 4567, two variables)."""
    values: dict[str, Any] = {
        "attempt_id": "att-0001",
        "campaign_id": "camp-1",
        "workspace_id": "ws-1",
        "recipient_id": "rcp-1",
        "to": "+12125554567",
        "agent": agent,
        "caller_id": agent.phone_number,
        "variables": {"first_name": "Ann", "balance": "12.50"},
    }
    values.update(changes)
    return DialRequest(**values)


@attrs.frozen
class Case:
    name: str
    fake: Callable[[], LoopbackServer]
    sync: Callable[..., Any]
    async_: Callable[..., Any]
    agent: AgentSettings
    to: str = "+12125554567"

    def request(self, **changes: Any) -> DialRequest:
        return dial(self.agent, to=self.to, **changes)


def _twilio(cls: Any) -> Callable[..., Any]:
    def make(server: FakeTwilio, **kw: Any) -> Any:
        return cls(
            server.account_sid,
            server.auth_token,
            status_callback_url=f"{CALLBACK}/twilio",
            **{"base_url": server.url, **kw},
        )

    return make


def _vapi(cls: Any) -> Callable[..., Any]:
    return lambda server, **kw: cls(server.api_key, **{"base_url": server.url, **kw})


def _retell(cls: Any) -> Callable[..., Any]:
    return lambda server, **kw: cls(server.api_key, **{"base_url": server.url, **kw})


def _elevenlabs(cls: Any) -> Callable[..., Any]:
    return lambda server, **kw: cls(server.api_key, **{"base_url": server.url, **kw})


def _exotel(cls: Any) -> Callable[..., Any]:
    def make(server: FakeExotel, **kw: Any) -> Any:
        return cls(
            server.account_sid,
            server.api_key,
            server.api_token,
            status_callback_url=f"{CALLBACK}/exotel",
            callback_token="cb-secret",
            **{"base_url": server.url, **kw},
        )

    return make


CASES = [
    Case(
        "twilio",
        FakeTwilio,
        _twilio(TwilioProvider),
        _twilio(AsyncTwilioProvider),
        AgentSettings(
            provider="twilio",
            phone_number="+12125550100",
            options={"url": "https://app.example/twiml", "machine_detection": "Enable"},
        ),
    ),
    Case(
        "vapi",
        FakeVapi,
        _vapi(VapiProvider),
        _vapi(AsyncVapiProvider),
        AgentSettings(
            provider="vapi",
            external_agent_id="asst-1",
            phone_number_id="pn-1",
            phone_number="+12125550100",
        ),
    ),
    Case(
        "retell",
        FakeRetell,
        _retell(RetellProvider),
        _retell(AsyncRetellProvider),
        AgentSettings(provider="retell", external_agent_id="agent_9", phone_number="+12125550100"),
    ),
    Case(
        "elevenlabs",
        FakeElevenLabs,
        _elevenlabs(ElevenLabsProvider),
        _elevenlabs(AsyncElevenLabsProvider),
        AgentSettings(
            provider="elevenlabs", external_agent_id="agent_11", phone_number_id="phnum_1"
        ),
    ),
    Case(
        "exotel",
        FakeExotel,
        _exotel(ExotelProvider),
        _exotel(AsyncExotelProvider),
        AgentSettings(provider="exotel", external_agent_id="424242", phone_number="08047112233"),
        to="+919876543210",
    ),
]

"""Voice providers over HTTP: Twilio, Vapi, Exotel, Retell and ElevenLabs.

Each provider has a synchronous adapter (a :class:`~outdial.ports.CallProvider`)
and an asyncio one (an :class:`~outdial.ports.AsyncCallProvider`) built on httpx,
sharing request building, response parsing and error classification; a webhook
verifier turning the provider's callbacks into
:class:`~outdial.ports.CallEvent` values; and an outcome table.

- :mod:`outdial.providers.twilio`, :mod:`~outdial.providers.vapi`,
  :mod:`~outdial.providers.retell`, :mod:`~outdial.providers.elevenlabs`,
  :mod:`~outdial.providers.exotel`: the adapters;
- :mod:`outdial.providers.webhooks`: :func:`verify_and_parse`, one entry point;
- :mod:`outdial.providers.fallback`: :class:`FallbackProvider` (never a double dial);
- :mod:`outdial.providers.registry`: :func:`provider_for`, :func:`validate_agent`,
  :func:`registry_from_env`.

See ``docs/providers.md``.
"""

from __future__ import annotations

from outdial.providers._http import DEFAULT_TIMEOUT, TokenBucket, parse_retry_after
from outdial.providers._mapping import Mapped
from outdial.providers.elevenlabs import (
    AsyncElevenLabsProvider,
    ElevenLabsProvider,
    ElevenLabsWebhook,
    elevenlabs_outcome,
)
from outdial.providers.exotel import (
    AsyncExotelProvider,
    ExotelProvider,
    ExotelWebhook,
    exotel_outcome,
)
from outdial.providers.fallback import (
    AsyncFallbackProvider,
    FallbackProvider,
    fallback_agent,
    fallback_request,
)
from outdial.providers.registry import (
    async_provider_for,
    async_registry_from_env,
    provider_for,
    registry_from_env,
    validate_agent,
)
from outdial.providers.retell import (
    AsyncRetellProvider,
    RetellProvider,
    RetellWebhook,
    retell_outcome,
)
from outdial.providers.twilio import (
    AsyncTwilioProvider,
    TwilioProvider,
    TwilioWebhook,
    twilio_outcome,
)
from outdial.providers.vapi import (
    AsyncVapiProvider,
    VapiBearer,
    VapiHmac,
    VapiProvider,
    VapiWebhook,
    vapi_outcome,
)
from outdial.providers.webhooks import WebhookVerifier, verify_and_parse, webhook_for

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncElevenLabsProvider",
    "AsyncExotelProvider",
    "AsyncFallbackProvider",
    "AsyncRetellProvider",
    "AsyncTwilioProvider",
    "AsyncVapiProvider",
    "ElevenLabsProvider",
    "ElevenLabsWebhook",
    "ExotelProvider",
    "ExotelWebhook",
    "FallbackProvider",
    "Mapped",
    "RetellProvider",
    "RetellWebhook",
    "TokenBucket",
    "TwilioProvider",
    "TwilioWebhook",
    "VapiBearer",
    "VapiHmac",
    "VapiProvider",
    "VapiWebhook",
    "WebhookVerifier",
    "async_provider_for",
    "async_registry_from_env",
    "elevenlabs_outcome",
    "exotel_outcome",
    "fallback_agent",
    "fallback_request",
    "parse_retry_after",
    "provider_for",
    "registry_from_env",
    "retell_outcome",
    "twilio_outcome",
    "validate_agent",
    "vapi_outcome",
    "verify_and_parse",
    "webhook_for",
]

"""One framework-neutral entry point for provider webhooks.

A web handler builds a :class:`~outdial.ports.WebhookRequest` from whatever its
framework gives it (method, the public URL, headers, the raw body bytes) and
calls :func:`verify_and_parse`, naming the provider and its secret, or passing
a webhook verifier (``TwilioWebhook(auth_token)``) or a provider adapter that
knows its own secret::

    event = verify_and_parse("retell", request, now=clock.now(), api_key=KEY)

The result is a :class:`~outdial.ports.CallEvent`. A forged, stale or unsigned
request raises :class:`~outdial.errors.WebhookVerificationError`, a body that
cannot be read :class:`~outdial.errors.WebhookPayloadError`; either way nothing
was changed, and the handler answers 4xx.

==========  ======================================  ===================================
provider    secrets (keyword arguments)             what is checked
==========  ======================================  ===================================
twilio      ``auth_token``                          ``X-Twilio-Signature`` (HMAC-SHA1)
vapi        ``bearer``, ``hmac``, ``secret``        bearer token, HMAC or x-vapi-secret
retell      ``api_key`` (``tolerance``)             ``x-retell-signature``, 5 min
elevenlabs  ``secret`` (``tolerance``)              ``ElevenLabs-Signature``, 30 min
exotel      ``token`` (``param``, ``timezone``)     secret token in the callback URL
==========  ======================================  ===================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from outdial.errors import ConfigurationError
from outdial.ports import CallEvent, WebhookRequest
from outdial.providers.elevenlabs import ElevenLabsWebhook
from outdial.providers.exotel import ExotelWebhook
from outdial.providers.retell import RetellWebhook
from outdial.providers.twilio import TwilioWebhook
from outdial.providers.vapi import VapiWebhook

__all__ = ["WEBHOOKS", "WebhookVerifier", "verify_and_parse", "webhook_for"]


@runtime_checkable
class WebhookVerifier(Protocol):
    """Checks a provider's webhook and turns it into a call event."""

    @property
    def provider(self) -> str: ...

    def verify(self, request: WebhookRequest, *, now: datetime) -> None: ...

    def parse(self, request: WebhookRequest, *, now: datetime) -> CallEvent: ...


#: Provider name -> webhook verifier class (called with the secrets as keywords).
WEBHOOKS: Mapping[str, Callable[..., WebhookVerifier]] = {
    "twilio": TwilioWebhook,
    "vapi": VapiWebhook,
    "retell": RetellWebhook,
    "elevenlabs": ElevenLabsWebhook,
    "exotel": ExotelWebhook,
}


def webhook_for(source: str | WebhookVerifier | Any, **secrets: Any) -> WebhookVerifier:
    """The verifier for ``source``: a provider name (built with ``secrets``), a
    verifier (returned as it is) or a provider adapter (its ``webhook(**secrets)``)."""
    if isinstance(source, str):
        factory = WEBHOOKS.get(source.strip().lower())
        if factory is None:
            raise ConfigurationError(
                "provider", source, f"has no webhook support (known: {', '.join(WEBHOOKS)})"
            )
        try:
            return factory(**secrets)
        except TypeError as exc:
            raise ConfigurationError(
                "secrets", sorted(secrets), f"do not fit the {source} webhook: {exc}"
            ) from None
    if isinstance(source, WebhookVerifier):
        if secrets:
            raise ConfigurationError("secrets", sorted(secrets), "are not used with a verifier")
        return source
    make = getattr(source, "webhook", None)
    if callable(make):
        verifier = make(**secrets)
        if isinstance(verifier, WebhookVerifier):
            return verifier
    raise ConfigurationError(
        "provider", source, "is not a provider name, a webhook verifier or an adapter"
    )


def verify_and_parse(
    source: str | WebhookVerifier | Any,
    request: WebhookRequest,
    *,
    now: datetime,
    **secrets: Any,
) -> CallEvent:
    """Verify ``request`` for ``source`` and parse it into a :class:`CallEvent`.

    ``now`` (aware) is the instant the request arrived: signed timestamps are
    checked against it and it stands in for events that carry no time.
    """
    return webhook_for(source, **secrets).parse(request, now=now)

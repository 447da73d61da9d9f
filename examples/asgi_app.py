"""outdial behind a small Starlette app: an API, provider webhooks, live progress.

::

    pip install 'outdial[sql,examples]'
    python examples/asgi_app.py            # http://127.0.0.1:8000, stores in outdial-service.sqlite

With no provider configured the calls are simulated (they last a second or
two), so the app works offline. Routes (the workspace is the ``X-Workspace``
header):

- ``POST /campaigns``: create and finalize a campaign (JSON: name, agent,
  recipients, concurrency_limit, retry_policy, business_hours...);
- ``GET /campaigns/{id}``: the campaign and its stats;
- ``POST /campaigns/{id}/start`` (``pause``, ``resume``, ``terminate``);
- ``GET /campaigns/{id}/events``: progress as server-sent events;
- ``POST /webhooks/{provider}``: provider callbacks, verified, applied once
  (group commit: the events of concurrent callbacks share one transaction).

Errors answer JSON: a missing workspace 400, an unknown campaign (or another
workspace's) 404, an action the campaign's state refuses 409, invalid settings
422 with every problem, a forged or stale webhook 401 and an unreadable one 400
(neither changes anything).

Configuration comes from the environment:

- ``OUTDIAL_DATABASE_URL`` (default ``sqlite:///outdial-service.sqlite``);
- the providers' variables, read by :func:`outdial.providers.registry_from_env`
  (``TWILIO_ACCOUNT_SID`` + ``TWILIO_AUTH_TOKEN`` + ``TWILIO_STATUS_CALLBACK_URL``,
  ``VAPI_API_KEY``, ``RETELL_API_KEY``, ``ELEVENLABS_API_KEY``,
  ``EXOTEL_ACCOUNT_SID``...); Twilio, Retell and Exotel webhooks are verified
  with the adapter's own secret;
- webhook secrets the API keys do not give: ``VAPI_WEBHOOK_BEARER``,
  ``VAPI_WEBHOOK_HMAC_SECRET`` or ``VAPI_WEBHOOK_SECRET`` (the server URL's
  credential), ``ELEVENLABS_WEBHOOK_SECRET``;
- ``OUTDIAL_PUBLIC_URL``: the public base URL providers call when the app sits
  behind a proxy (Twilio signs the URL it called; Exotel's token is in it);
- ``OUTDIAL_HOST`` / ``OUTDIAL_PORT`` for ``python examples/asgi_app.py``.

The dialer runs in the app's lifespan (a background thread, woken at once by
every action and webhook); the service's blocking calls run in Starlette's
thread pool so the event loop never waits on the database. Verified webhook
events go to an :class:`~outdial.group_commit.EventApplier` (also started in the
lifespan): concurrent callbacks are applied together, one commit per batch, and
each is answered with its own result once that commit is done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from outdial import AgentSettings, CampaignService, Dialer, EventBus
from outdial.errors import (
    CampaignValidationError,
    ConfigurationError,
    CsvImportError,
    InvalidPhoneNumber,
    InvalidTransition,
    NotFound,
    Problem,
    WebhookPayloadError,
    WebhookVerificationError,
)
from outdial.events import CampaignStatusChanged
from outdial.group_commit import EventApplier
from outdial.ports import CallProvider, Clock, Repository, SystemClock, WebhookRequest
from outdial.providers import (
    ElevenLabsWebhook,
    VapiWebhook,
    WebhookVerifier,
    registry_from_env,
    validate_agent,
    verify_and_parse,
    webhook_for,
)
from outdial.serialization import unstructure
from outdial.service import EDITABLE_FIELDS, ImportSummary
from outdial.simulation import SimulatedProvider, SimulationProfile, Uniform

__all__ = ["DEFAULT_DATABASE_URL", "OutdialApp", "create_app", "main", "webhooks_from_env"]

DEFAULT_DATABASE_URL = "sqlite:///outdial-service.sqlite"
WORKSPACE_HEADER = "X-Workspace"
ACTIONS = ("start", "pause", "resume", "terminate")

#: Simulated calls short enough to watch a campaign finish.
DEMO_CALLS = SimulationProfile(
    ring_seconds=Uniform(0.2, 1.0),
    talk_seconds=Uniform(0.5, 2.0),
    voicemail_after_seconds=Uniform(0.5, 1.0),
    voicemail_seconds=Uniform(0.3, 1.0),
    no_answer_seconds=Uniform(1.0, 2.0),
    fail_seconds=Uniform(0.1, 0.3),
)


def webhooks_from_env(
    environ: Mapping[str, str], registry: Mapping[str, CallProvider]
) -> dict[str, WebhookVerifier]:
    """A webhook verifier for every provider whose secret is known.

    Twilio, Retell and Exotel adapters know their own secret (auth token, API
    key, callback token); Vapi's server-URL credential and ElevenLabs' webhook
    secret are separate settings.
    """
    verifiers: dict[str, WebhookVerifier] = {}
    for name in ("twilio", "retell", "exotel"):
        adapter = registry.get(name)
        if adapter is not None:
            with contextlib.suppress(ConfigurationError):  # e.g. Twilio with an API key only
                verifiers[name] = webhook_for(adapter)
    vapi = {
        "bearer": environ.get("VAPI_WEBHOOK_BEARER") or None,
        "hmac": environ.get("VAPI_WEBHOOK_HMAC_SECRET") or None,
        "secret": environ.get("VAPI_WEBHOOK_SECRET") or None,
    }
    if any(vapi.values()):
        verifiers["vapi"] = VapiWebhook(**vapi)
    if environ.get("ELEVENLABS_WEBHOOK_SECRET"):
        verifiers["elevenlabs"] = ElevenLabsWebhook(environ["ELEVENLABS_WEBHOOK_SECRET"])
    return verifiers


# -- errors as JSON ------------------------------------------------------------------------------


class MissingWorkspace(Exception):
    """The request has no workspace header."""


def _problems(problems: tuple[Problem, ...]) -> list[dict[str, str]]:
    return [{"field": p.field, "message": p.message} for p in problems]


def _error(status: int, exc: Exception, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": type(exc).__name__, "message": str(exc), **extra}, status)


async def _missing_workspace(request: Request, exc: Exception) -> Response:
    return _error(400, exc)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, exc)


async def _conflict(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidTransition)
    state = getattr(exc.state, "value", exc.state)
    return _error(409, exc, state=str(state), action=str(getattr(exc.action, "value", exc.action)))


async def _invalid(request: Request, exc: Exception) -> Response:
    if isinstance(exc, CampaignValidationError):
        return _error(422, exc, problems=_problems(exc.problems))
    field = getattr(exc, "field", None) or getattr(exc, "column", None)
    return _error(422, exc, problems=[{"field": field or "", "message": str(exc)}])


async def _forged(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebhookVerificationError)
    return _error(401, exc, provider=exc.provider, reason=exc.reason)


async def _unreadable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WebhookPayloadError)
    return _error(400, exc, provider=exc.provider, reason=exc.reason)


_Handler = Callable[[Request, Exception], Awaitable[Response]]
EXCEPTION_HANDLERS: dict[Any, _Handler] = {
    MissingWorkspace: _missing_workspace,
    NotFound: _not_found,
    InvalidTransition: _conflict,
    CampaignValidationError: _invalid,
    ConfigurationError: _invalid,
    InvalidPhoneNumber: _invalid,
    CsvImportError: _invalid,
    WebhookVerificationError: _forged,
    WebhookPayloadError: _unreadable,
}


def _sse(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


# -- the app ---------------------------------------------------------------------------------------


class OutdialApp:
    """The endpoints, over one :class:`CampaignService`, one :class:`Dialer` and
    one :class:`EventBus`."""

    def __init__(
        self,
        repository: Repository,
        registry: Mapping[str, CallProvider],
        verifiers: Mapping[str, WebhookVerifier],
        *,
        clock: Clock,
        public_url: str | None = None,
    ) -> None:
        self.repository = repository
        self.registry = dict(registry)
        self.verifiers = dict(verifiers)
        self.clock = clock
        self.public_url = public_url.rstrip("/") if public_url else None
        self.bus = EventBus(keep=1000)
        self.dialer = Dialer(repository, self.registry, clock=clock, events=self.bus)
        self.service = CampaignService(
            repository,
            clock=clock,
            events=self.bus,
            providers=self.registry,
            agent_problems=self.agent_problems,
            on_change=self.dialer.wake,  # every action and webhook wakes the dialer at once
        )
        # webhooks: verified in the handler, applied in shared transactions (group commit)
        self.applier = EventApplier(self.service.apply_events)

    def agent_problems(self, agent: AgentSettings) -> list[Problem]:
        """The library's checks, and the provider must be one this app dials with."""
        problems = validate_agent(agent, self.registry)
        if agent.provider and agent.provider not in self.registry and not problems:
            known = ", ".join(sorted(self.registry))
            problems.append(
                Problem("agent.provider", f"{agent.provider!r} is not configured ({known})")
            )
        return problems

    @staticmethod
    def workspace(request: Request) -> str:
        workspace = request.headers.get(WORKSPACE_HEADER, "").strip()
        if not workspace:
            raise MissingWorkspace(f"the {WORKSPACE_HEADER} header names the workspace")
        return workspace

    def campaign_json(self, workspace: str, campaign_id: str) -> dict[str, Any]:
        details = self.service.get(workspace, campaign_id)
        return {"campaign": unstructure(details.campaign), "stats": details.stats.to_dict()}

    # -- campaigns -------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        workspace = self.workspace(request)
        try:
            fields = await request.json()
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            raise ConfigurationError("body", type(fields).__name__, "must be a JSON object")
        recipients = fields.pop("recipients", [])
        unknown = sorted(set(fields) - EDITABLE_FIELDS)
        if unknown:
            raise ConfigurationError(", ".join(unknown), unknown, "cannot be set on a campaign")
        if not isinstance(recipients, list):
            raise ConfigurationError("recipients", type(recipients).__name__, "must be a list")
        campaign_id, summary = await run_in_threadpool(
            self.create_campaign, workspace, fields, recipients
        )
        body = await run_in_threadpool(self.campaign_json, workspace, campaign_id)
        body["import"] = {"imported": summary.imported, "duplicates": summary.duplicates}
        return JSONResponse(body, 201)

    def create_campaign(
        self, workspace: str, fields: dict[str, Any], recipients: list[Any]
    ) -> tuple[str, ImportSummary]:
        """Draft, import, finalize: all or nothing (a refused draft is deleted), and a bad
        recipient row is refused with its index rather than left out."""
        try:
            draft = self.service.create(workspace, finalize=False, **fields)
        except TypeError as exc:  # e.g. an agent field AgentSettings does not have
            raise ConfigurationError("body", sorted(fields), str(exc)) from None
        try:
            summary = self.service.import_recipients(workspace, draft.id, recipients)
            if summary.problems:
                raise CampaignValidationError(summary.problems)
            campaign = self.service.finalize(workspace, draft.id)
        except Exception:
            self.service.delete(workspace, draft.id)
            raise
        return campaign.id, summary

    async def get(self, request: Request) -> Response:
        workspace = self.workspace(request)
        campaign_id = request.path_params["campaign_id"]
        return JSONResponse(await run_in_threadpool(self.campaign_json, workspace, campaign_id))

    async def act(self, request: Request) -> Response:
        workspace = self.workspace(request)
        campaign_id = request.path_params["campaign_id"]
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise NotFound("action", action)
        method = getattr(self.service, action)
        await run_in_threadpool(method, workspace, campaign_id)
        return JSONResponse(await run_in_threadpool(self.campaign_json, workspace, campaign_id))

    async def events(self, request: Request) -> Response:
        workspace = self.workspace(request)
        campaign_id = request.path_params["campaign_id"]
        await run_in_threadpool(self.service.get, workspace, campaign_id)  # 404 before streaming
        return StreamingResponse(
            self._stream(workspace, campaign_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _stream(self, workspace: str, campaign_id: str) -> AsyncIterator[str]:
        """The current progress, then every event of the campaign until it ends.

        The subscription is registered before the current state is read, so no
        event falls between the two.
        """
        subscription = self.bus.subscribe(campaign_id=campaign_id, workspace_id=workspace)
        try:
            details = await run_in_threadpool(self.service.get, workspace, campaign_id)
            campaign = details.campaign
            yield _sse(
                "progress",
                {
                    "campaign_id": campaign.id,
                    "status": campaign.status.value,
                    "counters": unstructure(campaign.counters),
                    "stats": details.stats.to_dict(),
                },
            )
            if campaign.status.final:
                return
            async for event in subscription:
                yield _sse(event.kind, unstructure(event))
                if isinstance(event, CampaignStatusChanged) and event.new.final:
                    return
        finally:
            subscription.close()

    # -- webhooks -----------------------------------------------------------------------------

    def webhook_url(self, request: Request) -> str:
        """The URL the provider called (what Twilio signs), behind a proxy too."""
        if self.public_url is None:
            return str(request.url)
        query = request.url.query
        return self.public_url + request.url.path + (f"?{query}" if query else "")

    async def webhook(self, request: Request) -> Response:
        provider = request.path_params["provider"]
        verifier = self.verifiers.get(provider)
        if verifier is None:
            raise NotFound("webhook", provider)
        incoming = WebhookRequest(
            request.method, self.webhook_url(request), dict(request.headers), await request.body()
        )
        # refused (401/400) before anything is read or stored
        event = verify_and_parse(verifier, incoming, now=self.clock.now())
        result = await self.applier.apply(event)  # after the commit of its batch
        return JSONResponse(
            {
                "effect": result.effect.value if result.effect is not None else "unmatched",
                "attempt_id": result.attempt_id,
                "recipient_status": (
                    result.recipient_status.value if result.recipient_status is not None else None
                ),
            }
        )

    # -- wiring -----------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/campaigns", self.create, methods=["POST"]),
            Route("/campaigns/{campaign_id}", self.get, methods=["GET"]),
            Route("/campaigns/{campaign_id}/events", self.events, methods=["GET"]),
            Route("/campaigns/{campaign_id}/{action}", self.act, methods=["POST"]),
            Route("/webhooks/{provider}", self.webhook, methods=["POST"]),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.dialer.start()
        try:
            async with self.applier:  # on shutdown, the queued webhooks are applied first
                yield
        finally:
            await run_in_threadpool(self.dialer.stop)


def create_app(
    environ: Mapping[str, str] | None = None,
    *,
    repository: Repository | None = None,
    clock: Clock | None = None,
) -> Starlette:
    """The app, configured from ``environ`` (``os.environ`` by default).

    ``repository`` replaces the SQL store named by ``OUTDIAL_DATABASE_URL``
    (the app then leaves it open on shutdown).
    """
    env = os.environ if environ is None else environ
    clock = clock or SystemClock()
    owned = repository is None
    if repository is None:
        from outdial.sql import connect

        repository = connect(env.get("OUTDIAL_DATABASE_URL") or DEFAULT_DATABASE_URL, create=True)
    registry: dict[str, CallProvider] = registry_from_env(env)
    verifiers = webhooks_from_env(env, registry)
    if not registry:  # offline: simulated calls that end by themselves
        registry["simulated"] = SimulatedProvider(clock, DEMO_CALLS, seed=1)
    outdial_app = OutdialApp(
        repository, registry, verifiers, clock=clock, public_url=env.get("OUTDIAL_PUBLIC_URL")
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with outdial_app.lifespan(app):
            yield
        for provider in registry.values():
            close = getattr(provider, "close", None)
            if callable(close):
                close()
        if owned:
            close_repository = getattr(repository, "close", None)
            if callable(close_repository):
                close_repository()

    app = Starlette(
        routes=outdial_app.routes(), lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS
    )
    app.state.outdial = outdial_app
    return app


QUICKSTART = """\
outdial on http://{host}:{port} ({mode})
  curl -s -X POST http://{host}:{port}/campaigns -H 'X-Workspace: demo' \\
    -d '{{"name": "Demo", "agent": {{"provider": "simulated"}}, "concurrency_limit": 3,
         "retry_policy": {{"max_attempts": 1}},
         "recipients": [{{"phone_number": "+12125550101"}}, {{"phone_number": "+12125550102"}}]}}'
  curl -s -X POST http://{host}:{port}/campaigns/ID/start -H 'X-Workspace: demo'
  curl -sN http://{host}:{port}/campaigns/ID/events -H 'X-Workspace: demo'
"""


def main() -> int:
    """Serve the app with uvicorn (``OUTDIAL_HOST``, ``OUTDIAL_PORT``)."""
    try:
        import uvicorn
    except ImportError:
        print("uvicorn is not installed: pip install 'outdial[sql,examples]'")
        return 1
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    host = os.environ.get("OUTDIAL_HOST", "127.0.0.1")
    port = int(os.environ.get("OUTDIAL_PORT", "8000"))
    app = create_app()
    providers = sorted(app.state.outdial.registry)
    print(QUICKSTART.format(host=host, port=port, mode="providers: " + ", ".join(providers)))
    uvicorn.run(app, host=host, port=port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

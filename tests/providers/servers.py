"""Loopback servers that speak each voice provider's wire format.

Each fake is a real threaded HTTP/1.1 server on ``127.0.0.1`` (port 0): the
adapters under test talk to it over TCP exactly as they would to the provider.
A fake checks what arrives field by field the way the provider would (auth
header, content type, required fields), answers with the provider's own
success and error bodies, keeps the calls it created, and can build (and post)
the webhooks the provider would send for them, signed with the provider's
scheme, to the callback URL the adapter gave it, or to any URL.

Faults are scripted with :meth:`LoopbackServer.inject`: a :class:`Reply` with a
status (429 + ``Retry-After``, 5xx...), a ``delay`` longer than the client's
timeout, or ``drop=True`` to close the connection without answering;
``through=True`` delays or drops the fake's own answer, after it created the call.

These fixtures are meant to be reused by the whole-campaign scenario tests:
``FakeTwilio(...).emit(fake.status_callback(sid, "completed"))`` posts a signed
callback to whatever URL the dialer's web endpoint listens on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import attrs
import httpx
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from outdial.ports import WebhookRequest

__all__ = [
    "FakeElevenLabs",
    "FakeExotel",
    "FakeRetell",
    "FakeTwilio",
    "FakeVapi",
    "LoopbackServer",
    "Recorded",
    "Reply",
    "refused_url",
]

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_L = TypeVar("_L", bound="LoopbackServer")


@attrs.frozen
class Recorded:
    """One request as the server received it (header names lower-cased)."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True)

    def json(self) -> Any:
        return json.loads(self.body)

    def basic_auth(self) -> tuple[str, str] | None:
        value = self.headers.get("authorization", "")
        if not value.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        return user, password


@attrs.frozen
class Reply:
    """An answer: status, JSON-able body (or raw bytes), headers; ``delay``
    seconds before answering; ``drop`` closes the connection without one.

    ``through=True`` lets the fake's own app handle the request (so a call is
    really created) and only applies ``delay`` / ``drop`` to its answer: the
    provider placed the call but the client never heard back.
    """

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    delay: float = 0.0
    drop: bool = False
    through: bool = False


def refused_url() -> str:
    """A loopback URL nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: LoopbackServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and left is expected


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without TCP_NODELAY, Nagle + the client's
    # delayed ACK hold every answer back ~40 ms
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        recorded = Recorded(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        reply = self.server.owner._answer(recorded)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if isinstance(reply.body, bytes):
            payload, content_type = reply.body, "application/octet-stream"
        elif reply.body is None:
            payload, content_type = b"", "application/json"
        else:
            payload, content_type = json.dumps(reply.body).encode(), "application/json"
        self.send_response_only(reply.status)
        headers = {
            "Server": "loopback",
            "Date": self.date_time_string(),
            "Content-Type": content_type,
            **reply.headers,
        }
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 answering with :meth:`app`.

    Every request is kept in :attr:`requests`; replies queued with
    :meth:`inject` are used first, in order, one per request.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.revoked = False  # True: refuse every credential, as after a key rotation
        self._injected: queue.SimpleQueue[Reply] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self: _L) -> _L:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, *replies: Reply) -> None:
        for reply in replies:
            self._injected.put(reply)

    def _answer(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
        try:
            injected = self._injected.get_nowait()
        except queue.Empty:
            injected = None
        if injected is not None and not injected.through:
            return injected
        with self._lock:
            reply = self.app(recorded)
        if injected is not None:
            reply = attrs.evolve(reply, delay=injected.delay, drop=injected.drop)
        return reply

    def app(self, request: Recorded) -> Reply:
        return Reply(200, {"ok": True})

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    @staticmethod
    def emit(request: WebhookRequest, *, timeout: float = 5.0) -> httpx.Response:
        """POST a webhook to its URL (a dialer's endpoint in scenario tests)."""
        return httpx.request(
            request.method,
            request.url,
            headers=dict(request.headers),
            content=request.body,
            timeout=timeout,
        )


def _json_reply(status: int, body: Any, **headers: str) -> Reply:
    return Reply(status, body, headers)


# -- Twilio -------------------------------------------------------------------------------------


class FakeTwilio(LoopbackServer):
    """Twilio's Calls resource and signed status callbacks."""

    def __init__(
        self, account_sid: str = "AC" + "0" * 32, auth_token: str = "twilio-token"
    ) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.calls: dict[str, dict[str, Any]] = {}
        self._seq = itertools.count(1)
        self._prefix = f"/2010-04-01/Accounts/{account_sid}/Calls"

    @staticmethod
    def _error(status: int, code: int, message: str) -> Reply:
        return _json_reply(
            status,
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
        )

    def app(self, request: Recorded) -> Reply:
        if self.revoked or request.basic_auth() != (self.account_sid, self.auth_token):
            return self._error(401, 20003, "Authenticate")
        if request.path == f"{self._prefix}.json" and request.method == "POST":
            return self._create(request)
        match = re.fullmatch(re.escape(self._prefix) + r"/([^/]+)\.json", request.path)
        if match is None:
            return self._error(404, 20404, "The requested resource was not found")
        call = self.calls.get(match.group(1))
        if call is None:
            return self._error(404, 20404, f"The requested resource {request.path} was not found")
        if request.method == "POST":
            if request.headers.get("content-type") != "application/x-www-form-urlencoded":
                return self._error(400, 20001, "form body expected")
            status = request.form().get("Status", [""])[0]
            if status == "canceled" and call["status"] in ("queued", "ringing"):
                call["status"] = "canceled"
            elif status == "completed" and call["status"] == "in-progress":
                call["status"] = "completed"
        return _json_reply(200, self._resource(call))

    def _create(self, request: Recorded) -> Reply:
        if request.headers.get("content-type") != "application/x-www-form-urlencoded":
            return self._error(400, 20001, "form body expected")
        form = request.form()
        to = form.get("To", [""])[0]
        if not form.get("From"):
            return self._error(400, 21603, "A 'From' phone number is required.")
        if not _E164.match(to):
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if sum(bool(form.get(k)) for k in ("Url", "Twiml", "ApplicationSid")) != 1:
            return self._error(400, 21205, "Url, Twiml or ApplicationSid is required.")
        events = form.get("StatusCallbackEvent", [])
        if any(e not in ("initiated", "ringing", "answered", "completed") for e in events):
            return self._error(400, 21626, "Invalid StatusCallbackEvent")
        sid = "CA" + uuid.uuid4().hex
        self.calls[sid] = {
            "sid": sid,
            "to": to,
            "from": form["From"][0],
            "status": "queued",
            "status_callback": form.get("StatusCallback", [None])[0],
            "events": events,
            "form": form,
        }
        return _json_reply(201, self._resource(self.calls[sid]))

    def _resource(self, call: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "sid": call["sid"],
            "account_sid": self.account_sid,
            "to": call["to"],
            "from": call["from"],
            "status": call["status"],
            "answered_by": call.get("answered_by"),
            "duration": call.get("duration"),
            "start_time": None,
            "end_time": None,
            "uri": f"{self._prefix}/{call['sid']}.json",
        }

    def status_callback(
        self,
        sid: str,
        status: str,
        *,
        answered_by: str | None = None,
        sip_response_code: int | None = None,
        duration: int | None = None,
        url: str | None = None,
        at: datetime | None = None,
    ) -> WebhookRequest:
        """A status callback for call ``sid``, signed the way Twilio signs it
        (with the official ``RequestValidator``), to the call's StatusCallback URL."""
        call = self.calls[sid]
        call["status"] = status
        if answered_by:
            call["answered_by"] = answered_by
        if duration is not None:
            call["duration"] = str(duration)
        params = {
            "CallSid": sid,
            "AccountSid": self.account_sid,
            "From": call["from"],
            "To": call["to"],
            "CallStatus": status,
            "Direction": "outbound-api",
            "ApiVersion": "2010-04-01",
            "SequenceNumber": str(next(self._seq) - 1),
            "Timestamp": format_datetime(at or datetime.now(timezone.utc), usegmt=True),
        }
        if answered_by:
            params["AnsweredBy"] = answered_by
        if sip_response_code is not None:
            params["SipResponseCode"] = str(sip_response_code)
        if duration is not None:
            params["CallDuration"] = str(duration)
        target = url or call["status_callback"]
        signature = RequestValidator(self.auth_token).compute_signature(target, params)
        return WebhookRequest(
            "POST",
            target,
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
                "I-Twilio-Idempotency-Token": uuid.uuid4().hex,
            },
            urlencode(params).encode(),
        )


# -- Vapi ------------------------------------------------------------------------------------


class FakeVapi(LoopbackServer):
    """Vapi's /call resource, live-call control URLs and server messages."""

    def __init__(self, api_key: str = "vapi-key", hmac_secret: str = "vapi-hmac") -> None:
        super().__init__()
        self.api_key = api_key
        self.hmac_secret = hmac_secret
        self.calls: dict[str, dict[str, Any]] = {}
        self.concurrency_limit: int | None = None

    def app(self, request: Recorded) -> Reply:
        if request.path.startswith("/control/"):
            call = self.calls.get(request.path.rsplit("/", 1)[-1])
            if call is None or request.json() != {"type": "end-call"}:
                return _json_reply(400, {"message": "bad control message"})
            call.update(status="ended", endedReason="assistant-ended-call")
            return _json_reply(200, {"ok": True})
        if self.revoked or request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _json_reply(
                401,
                {
                    "message": "Invalid Key. Hot tip, you may be using the private key.",
                    "error": "Unauthorized",
                    "statusCode": 401,
                },
            )
        if request.path == "/call" and request.method == "POST":
            return self._create(request)
        match = re.fullmatch(r"/call/([^/]+)", request.path)
        call = self.calls.get(match.group(1)) if match else None
        if call is None:
            return _json_reply(404, {"message": "Not Found", "statusCode": 404})
        return _json_reply(200, call)

    def _create(self, request: Recorded) -> Reply:
        if request.headers.get("content-type") != "application/json":
            return _json_reply(400, {"message": ["body must be JSON"], "statusCode": 400})
        body = request.json()
        problems = []
        if not body.get("assistantId"):
            problems.append("assistantId must be a UUID")
        if not body.get("phoneNumberId"):
            problems.append("phoneNumberId must be a UUID")
        if not _E164.match(str((body.get("customer") or {}).get("number", ""))):
            problems.append("customer.number must be a valid phone number in the E.164 format.")
        if len(body.get("name", "")) > 40:
            problems.append("name must be shorter than or equal to 40 characters")
        if problems:
            return _json_reply(
                400, {"message": problems, "error": "Bad Request", "statusCode": 400}
            )
        active = sum(c["status"] != "ended" for c in self.calls.values())
        if self.concurrency_limit is not None and active >= self.concurrency_limit:
            return _json_reply(
                400,
                {"message": "Over Concurrency Limit.", "error": "Bad Request", "statusCode": 400},
            )
        call_id = str(uuid.uuid4())
        self.calls[call_id] = {
            "id": call_id,
            "orgId": "org",
            "type": "outboundPhoneCall",
            "status": "queued",
            "assistantId": body["assistantId"],
            "phoneNumberId": body["phoneNumberId"],
            "customer": body["customer"],
            "assistantOverrides": body.get("assistantOverrides", {}),
            "name": body.get("name"),
            "monitor": {"controlUrl": f"{self.url}/control/{call_id}"},
            "createdAt": datetime.now(timezone.utc).isoformat(),
        }
        return _json_reply(201, self.calls[call_id])

    def server_message(
        self,
        call_id: str,
        kind: str,
        *,
        status: str | None = None,
        ended_reason: str | None = None,
        url: str = "https://app.example/webhooks/vapi",
        at: datetime | None = None,
        sign: str = "hmac",
    ) -> WebhookRequest:
        """A server message about ``call_id`` (``status-update`` / ``end-of-call-report``),
        authenticated with ``sign``: "hmac" (default plan), "bearer" or "secret"."""
        call = dict(self.calls[call_id])
        if status:
            call["status"] = status
        if ended_reason:
            call["endedReason"] = ended_reason
        self.calls[call_id] = call
        now = at or datetime.now(timezone.utc)
        message: dict[str, Any] = {
            "type": kind,
            "call": call,
            "timestamp": int(now.timestamp() * 1000),
        }
        if status:
            message["status"] = status
        if ended_reason:
            message["endedReason"] = ended_reason
        if kind == "end-of-call-report":
            message.update(
                startedAt="2026-03-02T15:00:00.000Z",
                endedAt="2026-03-02T15:01:30.500Z",
                artifact={"transcript": "AI: Hello"},
            )
        body = json.dumps({"message": message}).encode()
        headers = {"Content-Type": "application/json"}
        if sign == "hmac":
            stamp = str(int(now.timestamp() * 1000))
            digest = hmac.new(
                self.hmac_secret.encode(), stamp.encode() + b"." + body, hashlib.sha256
            )
            headers.update({"x-signature": digest.hexdigest(), "x-timestamp": stamp})
        elif sign == "bearer":
            headers["Authorization"] = f"Bearer {self.hmac_secret}"
        elif sign == "secret":
            headers["x-vapi-secret"] = self.hmac_secret
        return WebhookRequest("POST", url, headers, body)


# -- Retell -----------------------------------------------------------------------------------


class FakeRetell(LoopbackServer):
    """Retell's create-phone-call / get-call and signed webhooks."""

    def __init__(self, api_key: str = "key_retell") -> None:
        super().__init__()
        self.api_key = api_key
        self.calls: dict[str, dict[str, Any]] = {}

    def app(self, request: Recorded) -> Reply:
        if self.revoked or request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _json_reply(401, {"status": "error", "message": "Invalid API key"})
        if request.path == "/v2/create-phone-call" and request.method == "POST":
            if request.headers.get("content-type") != "application/json":
                return _json_reply(400, {"status": "error", "message": "JSON body expected"})
            body = request.json()
            for field in ("from_number", "to_number"):
                if not _E164.match(str(body.get(field, ""))):
                    return _json_reply(
                        400, {"status": "error", "message": f"{field} is not a valid E.164 number"}
                    )
            variables = body.get("retell_llm_dynamic_variables", {})
            if not all(isinstance(v, str) for v in variables.values()):
                return _json_reply(
                    400, {"status": "error", "message": "dynamic variables must be strings"}
                )
            call_id = "call_" + uuid.uuid4().hex[:24]
            self.calls[call_id] = {
                "call_id": call_id,
                "call_type": "phone_call",
                "agent_id": body.get("override_agent_id", "agent_default"),
                "call_status": "registered",
                "from_number": body["from_number"],
                "to_number": body["to_number"],
                "direction": "outbound",
                "metadata": body.get("metadata", {}),
                "retell_llm_dynamic_variables": variables,
            }
            return _json_reply(201, self.calls[call_id])
        match = re.fullmatch(r"/v2/get-call/([^/]+)", request.path)
        call = self.calls.get(match.group(1)) if match else None
        if call is None:
            return _json_reply(404, {"status": "error", "message": "Call not found"})
        return _json_reply(200, call)

    def webhook(
        self,
        call_id: str,
        event: str,
        *,
        disconnection_reason: str | None = None,
        in_voicemail: bool | None = None,
        url: str = "https://app.example/webhooks/retell",
        at: datetime | None = None,
    ) -> WebhookRequest:
        call = dict(self.calls[call_id])
        now = at or datetime.now(timezone.utc)
        ms = int(now.timestamp() * 1000)
        call["start_timestamp"] = ms - 61_000
        if event == "call_started":
            call["call_status"] = "ongoing"
        else:
            call.update(call_status="ended", end_timestamp=ms, duration_ms=61_000)
            if disconnection_reason:
                call["disconnection_reason"] = disconnection_reason
            if in_voicemail is not None:
                call["call_analysis"] = {"in_voicemail": in_voicemail}
        self.calls[call_id] = call
        body = json.dumps({"event": event, "call": call}).encode()
        digest = hmac.new(self.api_key.encode(), body + str(ms).encode(), hashlib.sha256)
        return WebhookRequest(
            "POST",
            url,
            {
                "Content-Type": "application/json",
                "x-retell-signature": f"v={ms},d={digest.hexdigest()}",
            },
            body,
        )


# -- ElevenLabs -----------------------------------------------------------------------------


class FakeElevenLabs(LoopbackServer):
    """ElevenLabs' outbound-call + conversations endpoints and signed post-call webhooks."""

    def __init__(self, api_key: str = "xi-key", webhook_secret: str = "wsec_11") -> None:
        super().__init__()
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.conversations: dict[str, dict[str, Any]] = {}

    def app(self, request: Recorded) -> Reply:
        if self.revoked or request.headers.get("xi-api-key") != self.api_key:
            return _json_reply(
                401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
            )
        if request.method == "POST" and request.path in (
            "/v1/convai/twilio/outbound-call",
            "/v1/convai/sip-trunk/outbound-call",
        ):
            if request.headers.get("content-type") != "application/json":
                return _json_reply(422, {"detail": [{"msg": "JSON body expected"}]})
            body = request.json()
            missing = [
                k for k in ("agent_id", "agent_phone_number_id", "to_number") if not body.get(k)
            ]
            if missing:
                return _json_reply(
                    422,
                    {"detail": [{"loc": ["body", k], "msg": "Field required"} for k in missing]},
                )
            conversation = "conv_" + uuid.uuid4().hex[:20]
            self.conversations[conversation] = {
                "agent_id": body["agent_id"],
                "conversation_id": conversation,
                "status": "initiated",
                "metadata": {},
                "conversation_initiation_client_data": body.get(
                    "conversation_initiation_client_data", {}
                ),
                "to_number": body["to_number"],
                "route": request.path,
            }
            return _json_reply(
                200,
                {
                    "success": True,
                    "message": "Success",
                    "conversation_id": conversation,
                    "callSid": "CA" + uuid.uuid4().hex,
                },
            )
        match = re.fullmatch(r"/v1/convai/conversations/([^/]+)", request.path)
        found = self.conversations.get(match.group(1)) if match else None
        if found is None:
            return _json_reply(
                404, {"detail": {"status": "conversation_not_found", "message": "Not found"}}
            )
        return _json_reply(200, found)

    def webhook(
        self,
        conversation: str,
        kind: str,
        *,
        status: str = "done",
        failure_reason: str | None = None,
        url: str = "https://app.example/webhooks/elevenlabs",
        at: datetime | None = None,
        signed_at: datetime | None = None,
    ) -> WebhookRequest:
        data = dict(self.conversations[conversation])
        now = at or datetime.now(timezone.utc)
        if kind == "post_call_transcription":
            data.update(status=status, metadata={"call_duration_secs": 42})
        elif kind == "call_initiation_failure":
            data = {
                "agent_id": data["agent_id"],
                "conversation_id": conversation,
                "failure_reason": failure_reason or "unknown",
                "metadata": {"type": "twilio", "body": {}},
                "conversation_initiation_client_data": data["conversation_initiation_client_data"],
            }
        body = json.dumps(
            {"type": kind, "event_timestamp": int(now.timestamp()), "data": data}
        ).encode()
        t = str(int((signed_at or now).timestamp()))
        digest = hmac.new(self.webhook_secret.encode(), f"{t}.".encode() + body, hashlib.sha256)
        return WebhookRequest(
            "POST",
            url,
            {
                "Content-Type": "application/json",
                "ElevenLabs-Signature": f"t={t},v0={digest.hexdigest()}",
            },
            body,
        )


# -- Exotel ---------------------------------------------------------------------------------


class FakeExotel(LoopbackServer):
    """Exotel's Calls/connect + call details and token-carrying status callbacks."""

    def __init__(
        self, account_sid: str = "exoacct1", api_key: str = "exo-key", api_token: str = "exo-token"
    ) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.api_key = api_key
        self.api_token = api_token
        self.calls: dict[str, dict[str, Any]] = {}
        self._prefix = f"/v1/Accounts/{account_sid}/Calls"

    @staticmethod
    def _error(status: int, message: str, code: int | None = None) -> Reply:
        return _json_reply(
            status, {"RestException": {"Status": status, "Message": message, "Code": code}}
        )

    def app(self, request: Recorded) -> Reply:
        if self.revoked or request.basic_auth() != (self.api_key, self.api_token):
            return self._error(401, "Authentication is required to access this resource")
        if request.path == f"{self._prefix}/connect.json" and request.method == "POST":
            if request.headers.get("content-type") != "application/x-www-form-urlencoded":
                return self._error(400, "form body expected")
            form = request.form()
            for field in ("From", "CallerId", "Url"):
                if not form.get(field):
                    return self._error(400, f"Missing parameter {field}", 34001)
            if len(form.get("CustomField", [""])[0]) > 128:
                return self._error(400, "CustomField too long", 34002)
            sid = uuid.uuid4().hex
            self.calls[sid] = {
                "Sid": sid,
                "ParentCallSid": None,
                "DateCreated": "2026-03-02 15:00:00",
                "AccountSid": self.account_sid,
                "To": form["CallerId"][0],
                "From": form["From"][0],
                "PhoneNumberSid": form["CallerId"][0],
                "Status": "in-progress",
                "Direction": "outbound-api",
                "Duration": None,
                "status_callback": form.get("StatusCallback", [None])[0],
                "CustomField": form.get("CustomField", [None])[0],
                "form": form,
            }
            return _json_reply(200, {"Call": self._public(self.calls[sid])})
        match = re.fullmatch(re.escape(self._prefix) + r"/([^/]+)\.json", request.path)
        call = self.calls.get(match.group(1)) if match else None
        if call is None:
            return self._error(404, "Call not found", 20404)
        return _json_reply(200, {"Call": self._public(call)})

    @staticmethod
    def _public(call: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in call.items() if k not in ("status_callback", "form")}

    def status_callback(
        self,
        sid: str,
        status: str,
        *,
        event_type: str = "terminal",
        content: str = "json",
        url: str | None = None,
        date_updated: str = "2026-03-02 20:31:05",
    ) -> WebhookRequest:
        call = self.calls[sid]
        call["Status"] = status
        fields = {
            "CallSid": sid,
            "Status": status,
            "DateUpdated": date_updated,
            "RecordingUrl": "",
            "EventType": event_type,
            "CustomField": call["CustomField"],
            "ConversationDuration": "33" if status == "completed" else "0",
        }
        target = url or call["status_callback"]
        if content == "json":
            return WebhookRequest(
                "POST", target, {"Content-Type": "application/json"}, json.dumps(fields).encode()
            )
        if content == "form":
            return WebhookRequest(
                "POST",
                target,
                {"Content-Type": "application/x-www-form-urlencoded"},
                urlencode(fields).encode(),
            )
        boundary = "exotelboundary"
        parts = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
            for k, v in fields.items()
        )
        return WebhookRequest(
            "POST",
            target,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
            parts + f"--{boundary}--\r\n".encode(),
        )

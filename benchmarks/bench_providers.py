"""How fast the provider adapters are: webhooks verified + parsed per second,
and the cost of placing calls through an async adapter against bare httpx.

``run()`` measures:

- for each provider, ``verify_and_parse`` of one realistically signed webhook
  (Twilio form + X-Twilio-Signature, Vapi HMAC, Retell, ElevenLabs, Exotel
  token), repeated; best of several runs;
- the adapter's own CPU work per call, without I/O: building the request and
  reading a canned 201 answer (``_build_place`` + ``_checked`` + ``_placed_from``);
- placing 400 calls at concurrency 50 with ``AsyncVapiProvider`` (JSON) and
  ``AsyncTwilioProvider`` (form), against a minimal asyncio HTTP/1.1 server in
  a separate process (so the server does not share the client's GIL), and the
  same number of bare ``httpx.AsyncClient`` posts of the very same bytes to the
  same server with the same connection limits. The ratio adapter / bare is the
  adapter's overhead per call (request building, response parsing, error
  classification); the contract is <= 1.2x. It is given in client CPU time
  (``time.process_time`` of this process; the server runs in another), which
  other processes on a busy machine barely disturb, and in wall time, which
  they do. Five rounds are interleaved (alternating which goes first) and the
  best of each kept. The absolute rate is httpx's: its connection pool slows
  down as the number of open connections grows, for both loops alike.

Run it as a script: ``python benchmarks/bench_providers.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import multiprocessing
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

import httpx

from outdial.campaign import AgentSettings
from outdial.ports import DialRequest, WebhookRequest
from outdial.providers import AsyncTwilioProvider, AsyncVapiProvider, verify_and_parse
from outdial.providers._http import DEFAULT_LIMITS, Operation

__all__ = ["run"]

PARSES = 20_000
CALLS = 400
CONCURRENCY = 50
REPEATS = 5
ROUNDS = 5
CPU_CALLS = 20_000
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)

# -- webhooks --------------------------------------------------------------------------------


def _twilio() -> tuple[WebhookRequest, dict[str, Any]]:
    url = "https://app.example/webhooks/twilio?attempt_id=att-1"
    params = {
        "CallSid": "CA" + "f" * 32,
        "AccountSid": "AC" + "0" * 32,
        "From": "+12125550100",
        "To": "+12125554567",
        "CallStatus": "completed",
        "CallDuration": "42",
        "AnsweredBy": "human",
        "SequenceNumber": "3",
        "Timestamp": "Mon, 02 Mar 2026 15:00:00 +0000",
        "Direction": "outbound-api",
        "ApiVersion": "2010-04-01",
    }
    signed = url + "".join(k + params[k] for k in sorted(params))
    digest = hmac.new(b"tok", signed.encode(), hashlib.sha1).digest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": base64.b64encode(digest).decode(),
    }
    return WebhookRequest("POST", url, headers, urlencode(params).encode()), {"auth_token": "tok"}


def _vapi() -> tuple[WebhookRequest, dict[str, Any]]:
    call = {
        "id": "0b7c8a3e-0000-4000-8000-000000000001",
        "status": "ended",
        "assistantOverrides": {"metadata": {"attempt_id": "att-1"}},
    }
    message = {
        "type": "end-of-call-report",
        "endedReason": "customer-ended-call",
        "call": call,
        "startedAt": "2026-03-02T15:00:00.000Z",
        "endedAt": "2026-03-02T15:01:30.000Z",
        "timestamp": int(NOW.timestamp() * 1000),
        "artifact": {"transcript": "AI: Hello\nUser: Hi " * 40},
    }
    body = json.dumps({"message": message}).encode()
    stamp = str(int(NOW.timestamp() * 1000))
    digest = hmac.new(b"vh", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "x-signature": digest, "x-timestamp": stamp}
    return WebhookRequest("POST", "https://app.example/v", headers, body), {"hmac": "vh"}


def _retell() -> tuple[WebhookRequest, dict[str, Any]]:
    ms = int(NOW.timestamp() * 1000)
    call = {
        "call_id": "call_1",
        "call_status": "ended",
        "disconnection_reason": "user_hangup",
        "metadata": {"attempt_id": "att-1"},
        "start_timestamp": ms - 60_000,
        "end_timestamp": ms,
        "duration_ms": 60_000,
        "transcript": "Agent: Hello\nUser: Hi\n" * 40,
    }
    body = json.dumps({"event": "call_ended", "call": call}).encode()
    digest = hmac.new(b"rk", body + str(ms).encode(), hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "x-retell-signature": f"v={ms},d={digest}"}
    return WebhookRequest("POST", "https://app.example/r", headers, body), {"api_key": "rk"}


def _elevenlabs() -> tuple[WebhookRequest, dict[str, Any]]:
    data = {
        "agent_id": "agent_1",
        "conversation_id": "conv_1",
        "status": "done",
        "metadata": {"call_duration_secs": 42},
        "conversation_initiation_client_data": {"dynamic_variables": {"attempt_id": "att-1"}},
        "transcript": [{"role": "agent", "message": "Hello"}] * 40,
    }
    t = str(int(NOW.timestamp()))
    body = json.dumps(
        {"type": "post_call_transcription", "event_timestamp": int(t), "data": data}
    ).encode()
    digest = hmac.new(b"es", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "ElevenLabs-Signature": f"t={t},v0={digest}"}
    return WebhookRequest("POST", "https://app.example/e", headers, body), {"secret": "es"}


def _exotel() -> tuple[WebhookRequest, dict[str, Any]]:
    fields = {
        "CallSid": "b6f1" * 8,
        "Status": "completed",
        "DateUpdated": "2026-03-02 20:31:05",
        "EventType": "terminal",
        "CustomField": "att-1",
        "ConversationDuration": "33",
    }
    url = "https://app.example/x?attempt_id=att-1&token=cb"
    headers = {"Content-Type": "application/json"}
    return WebhookRequest("POST", url, headers, json.dumps(fields).encode()), {"token": "cb"}


WEBHOOKS: dict[str, Callable[[], tuple[WebhookRequest, dict[str, Any]]]] = {
    "twilio": _twilio,
    "vapi": _vapi,
    "retell": _retell,
    "elevenlabs": _elevenlabs,
    "exotel": _exotel,
}


def webhook_rates() -> dict[str, float]:
    """Webhooks verified + parsed per second, per provider (best of REPEATS)."""
    rates = {}
    for name, build in WEBHOOKS.items():
        request, secrets = build()
        assert verify_and_parse(name, request, now=NOW, **secrets).final, name
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            for _ in range(PARSES // REPEATS):
                verify_and_parse(name, request, now=NOW, **secrets)
            best = min(best, time.perf_counter() - start)
        rates[name] = (PARSES // REPEATS) / best
    return rates


# -- placing calls ------------------------------------------------------------------------------

_ANSWER = json.dumps({"id": "c-1", "sid": "CA1", "status": "queued"}).encode()
_RESPONSE = (
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_ANSWER)).encode()
    + b"\r\n\r\n"
    + _ANSWER
)


class _Fast(asyncio.Protocol):
    """A minimal keep-alive HTTP/1.1 server: reads a request, answers 201 JSON."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(_RESPONSE)


def _serve(port_out: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Fast, "127.0.0.1", 0)
        port_out.send(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _request(agent: AgentSettings, i: int) -> DialRequest:
    return DialRequest(
        attempt_id=f"att-{i:06d}",
        campaign_id="camp-1",
        workspace_id="ws-1",
        recipient_id=f"rcp-{i}",
        to="+12125554567",
        agent=agent,
        caller_id=agent.phone_number,
        variables={"first_name": "Ann", "balance": "12.50", "due": "2026-03-09"},
    )


async def _gather(work: Callable[[int], Any]) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) to run ``work`` for CALLS calls."""
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with semaphore:
            await work(i)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(CALLS)))
    return time.perf_counter() - start, time.process_time() - cpu


async def _adapter_seconds(provider: Any, agent: AgentSettings) -> tuple[float, float]:
    requests = [_request(agent, i) for i in range(CALLS)]

    async def work(i: int) -> None:
        await provider.place_call(requests[i])

    return await _gather(work)


async def _bare_seconds(
    client: httpx.AsyncClient, provider: Any, agent: AgentSettings
) -> tuple[float, float]:
    outs = [provider._build_place(_request(agent, i)) for i in range(CALLS)]

    async def work(i: int) -> None:
        out = outs[i]
        response = await client.post(out.path, content=out.content, headers=out.headers)
        response.raise_for_status()
        response.json()

    return await _gather(work)


def cpu_microseconds() -> dict[str, float]:
    """Microseconds of adapter work per call (build the request, read the answer)."""
    answer = httpx.Response(201, content=_ANSWER, headers={"Content-Type": "application/json"})
    out = {}
    for name, (make, agent) in _setups("http://127.0.0.1:9").items():
        provider = make()
        requests = [_request(agent, i) for i in range(CPU_CALLS)]
        best = float("inf")
        for _ in range(REPEATS):
            start = time.perf_counter()
            for request in requests:
                provider._build_place(request)
                data = provider._checked(answer, Operation.PLACE)
                provider._placed_from(data, request)
            best = min(best, time.perf_counter() - start)
        asyncio.run(provider.aclose())
        out[name] = best / CPU_CALLS * 1e6
    return out


def _setups(base_url: str) -> dict[str, tuple[Callable[[], Any], AgentSettings]]:
    return {
        "vapi": (
            lambda: AsyncVapiProvider("vk", base_url=base_url),
            AgentSettings(provider="vapi", external_agent_id="asst", phone_number_id="pn"),
        ),
        "twilio": (
            lambda: AsyncTwilioProvider(
                "AC1", "tok", status_callback_url="https://app.example/cb", base_url=base_url
            ),
            AgentSettings(
                provider="twilio",
                phone_number="+12125550100",
                options={"url": "https://app.example/twiml"},
            ),
        ),
    }


Timing = tuple[float, float]  # (wall seconds, client CPU seconds), best of ROUNDS


def _best(runs: list[Timing]) -> Timing:
    return min(r[0] for r in runs), min(r[1] for r in runs)


def placement_ratios(base_url: str) -> dict[str, tuple[Timing, Timing]]:
    """{provider: (adapter timing, bare timing)} for CALLS calls at CONCURRENCY."""
    setups = _setups(base_url)

    async def measure() -> dict[str, tuple[Timing, Timing]]:
        out = {}
        for name, (make, agent) in setups.items():
            provider = make()
            bare = httpx.AsyncClient(
                base_url=base_url,
                headers=dict(provider._client.headers),
                limits=DEFAULT_LIMITS,
                timeout=10.0,
            )
            await _adapter_seconds(provider, agent)  # warm both pools up
            await _bare_seconds(bare, provider, agent)
            adapter_runs, bare_runs = [], []
            for round_ in range(ROUNDS):  # interleaved, alternating which goes first
                for which in (0, 1) if round_ % 2 else (1, 0):
                    if which:
                        bare_runs.append(await _bare_seconds(bare, provider, agent))
                    else:
                        adapter_runs.append(await _adapter_seconds(provider, agent))
            await provider.aclose()
            await bare.aclose()
            out[name] = (_best(adapter_runs), _best(bare_runs))
        return out

    return asyncio.run(measure())


def run() -> list[tuple[str, str]]:
    """Measure and return ``(label, value)`` rows."""
    rows = [
        (f"{name} webhooks verified+parsed/s", f"{rate:,.0f}")
        for name, rate in webhook_rates().items()
    ]
    rows += [
        (f"{name} adapter CPU per call (build+parse)", f"{us:,.1f} µs")
        for name, us in cpu_microseconds().items()
    ]
    receive, send = multiprocessing.Pipe(duplex=False)
    server = multiprocessing.Process(target=_serve, args=(send,), daemon=True)
    server.start()
    try:
        base_url = f"http://127.0.0.1:{receive.recv()}"
        for name, ((wall, cpu), (bare_wall, bare_cpu)) in placement_ratios(base_url).items():
            rows += [
                (f"{name} calls/s, async adapter (c={CONCURRENCY})", f"{CALLS / wall:,.0f}"),
                (f"{name} posts/s, bare httpx (c={CONCURRENCY})", f"{CALLS / bare_wall:,.0f}"),
                (f"{name} client CPU per call, adapter", f"{cpu / CALLS * 1e6:,.0f} µs"),
                (f"{name} client CPU per call, bare httpx", f"{bare_cpu / CALLS * 1e6:,.0f} µs"),
                (f"{name} ratio adapter / bare (client CPU)", f"{cpu / bare_cpu:.3f}x"),
                (f"{name} ratio adapter / bare (wall time)", f"{wall / bare_wall:.3f}x"),
            ]
    finally:
        server.terminate()
        server.join()
    return rows


if __name__ == "__main__":
    for label, value in run():
        print(f"{label:48s} {value}")

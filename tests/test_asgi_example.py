"""examples/asgi_app.py, driven through Starlette's TestClient (its lifespan runs the dialer).

Provider calls go to the loopback fakes of tests/providers/servers.py, configured
through the same environment variables a deployment would set; webhooks are
signed the way each provider signs them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest

pytest.importorskip("starlette")
pytest.importorskip("outdial.sql")

with warnings.catch_warnings():  # Starlette 1.x: "install httpx2" (its TestClient's new client)
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

from outdial.simulation import sample_numbers
from providers.servers import FakeTwilio, FakeVapi

EXAMPLE = Path(__file__).parent.parent / "examples" / "asgi_app.py"
WS = {"X-Workspace": "acme"}


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asgi_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'service.sqlite'}"


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def create(client: TestClient, agent: dict[str, Any], n: int = 2, **fields: Any) -> str:
    response = client.post(
        "/campaigns",
        headers=WS,
        json={
            "name": "Reminders",
            "agent": agent,
            "concurrency_limit": 1,
            "retry_policy": {"max_attempts": 1},
            "recipients": [{"phone_number": p} for p in sample_numbers(n, seed=4)],
            **fields,
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["campaign"]["status"] == "ready"
    assert body["import"] == {"imported": n, "duplicates": 0}
    return str(body["campaign"]["id"])


def counters(client: TestClient, campaign_id: str) -> dict[str, Any]:
    response = client.get(f"/campaigns/{campaign_id}", headers=WS)
    assert response.status_code == 200
    body = response.json()
    return {"counters": body["campaign"]["counters"], "by_outcome": body["stats"]["by_outcome"]}


def post_webhook(client: TestClient, provider: str, request: Any, **headers: str) -> Any:
    """Post a provider's webhook (a WebhookRequest) to the app's endpoint, keeping the
    query string of the URL the provider was given."""
    query = urlsplit(request.url).query
    return client.post(
        f"/webhooks/{provider}" + (f"?{query}" if query else ""),
        content=request.body,
        headers={**request.headers, **headers},
    )


# -- webhooks ------------------------------------------------------------------------------------


@pytest.fixture
def vapi() -> Iterator[FakeVapi]:
    with FakeVapi() as server:
        yield server


def test_a_signed_vapi_webhook_moves_the_stats_and_a_forged_one_changes_nothing(
    example: ModuleType, vapi: FakeVapi, database: str
) -> None:
    env = {
        "OUTDIAL_DATABASE_URL": database,
        "VAPI_API_KEY": vapi.api_key,
        "VAPI_BASE_URL": vapi.url,
        "VAPI_WEBHOOK_BEARER": vapi.hmac_secret,  # the server URL's bearer credential
    }
    agent = {"provider": "vapi", "external_agent_id": "asst-1", "phone_number_id": "pn-1"}
    with TestClient(example.create_app(env)) as client:
        campaign_id = create(client, agent)
        started = client.post(f"/campaigns/{campaign_id}/start", headers=WS)
        assert started.status_code == 200 and started.json()["campaign"]["status"] == "active"
        (call_id,) = wait_for(lambda: list(vapi.calls))  # the dialer placed the first call
        # and recorded it (the provider answers before the dialer writes the placement)
        before = wait_for(
            lambda: (c := counters(client, campaign_id))["counters"]["calling"] == 1 and c
        )
        assert before["counters"]["queued"] == 0

        report = vapi.server_message(
            call_id, "end-of-call-report", ended_reason="customer-ended-call", sign="bearer"
        )
        applier = client.app.state.outdial.applier
        forged = post_webhook(client, "vapi", report, Authorization="Bearer guessed")
        assert forged.status_code == 401
        assert forged.json()["error"] == "WebhookVerificationError"
        assert forged.json()["provider"] == "vapi"
        assert counters(client, campaign_id) == before

        unreadable = post_webhook(client, "vapi", attrs.evolve(report, body=b"not json"))
        assert unreadable.status_code == 400
        assert unreadable.json()["error"] == "WebhookPayloadError"
        assert counters(client, campaign_id) == before
        assert applier.events == 0  # refused before reaching the group committer

        applied = post_webhook(client, "vapi", report)
        assert applied.status_code == 200
        assert applied.json()["effect"] == "applied"
        assert applied.json()["recipient_status"] == "completed"
        assert applier.events == 1
        after = counters(client, campaign_id)
        assert after["counters"]["answered"] == after["counters"]["completed"] == 1
        assert after["by_outcome"] == {"answered": 1}
        # the webhook woke the dialer: the next recipient is called at once
        wait_for(lambda: len(vapi.calls) == 2)

        again = post_webhook(client, "vapi", report)
        assert again.json()["effect"] == "duplicate"
        assert counters(client, campaign_id)["counters"]["answered"] == 1


def test_concurrent_webhooks_are_each_applied_once_through_the_group_committer(
    example: ModuleType, vapi: FakeVapi, database: str
) -> None:
    env = {
        "OUTDIAL_DATABASE_URL": database,
        "VAPI_API_KEY": vapi.api_key,
        "VAPI_BASE_URL": vapi.url,
        "VAPI_WEBHOOK_BEARER": vapi.hmac_secret,
    }
    agent = {"provider": "vapi", "external_agent_id": "asst-1", "phone_number_id": "pn-1"}
    n = 12
    with TestClient(example.create_app(env)) as client:
        campaign_id = create(client, agent, n=n, concurrency_limit=n)
        client.post(f"/campaigns/{campaign_id}/start", headers=WS)
        call_ids = wait_for(lambda: len(vapi.calls) == n and list(vapi.calls))
        wait_for(lambda: counters(client, campaign_id)["counters"]["calling"] == n)
        reports = [
            vapi.server_message(
                c, "end-of-call-report", ended_reason="customer-ended-call", sign="bearer"
            )
            for c in call_ids
        ] * 2  # every report delivered twice
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda r: post_webhook(client, "vapi", r), reports))
        effects = sorted(a.json()["effect"] for a in answers)
        assert effects == ["applied"] * n + ["duplicate"] * n
        after = counters(client, campaign_id)["counters"]
        assert after["completed"] == after["answered"] == n and after["calling"] == 0
        assert client.app.state.outdial.applier.events == 2 * n


@pytest.mark.parametrize(
    ("callback_base", "public_url"),
    [("http://testserver", None), ("https://calls.example.com", "https://calls.example.com")],
    ids=["direct", "behind-a-proxy"],
)
def test_a_twilio_callback_is_verified_against_the_url_twilio_called(
    example: ModuleType, database: str, callback_base: str, public_url: str | None
) -> None:
    with FakeTwilio() as twilio:
        env = {
            "OUTDIAL_DATABASE_URL": database,
            "TWILIO_ACCOUNT_SID": twilio.account_sid,
            "TWILIO_AUTH_TOKEN": twilio.auth_token,
            "TWILIO_BASE_URL": twilio.url,
            "TWILIO_STATUS_CALLBACK_URL": f"{callback_base}/webhooks/twilio",
        }
        if public_url:
            env["OUTDIAL_PUBLIC_URL"] = public_url
        agent = {
            "provider": "twilio",
            "phone_number": "+12125550100",
            "options": {"url": "https://app.example/twiml"},
        }
        with TestClient(example.create_app(env)) as client:
            campaign_id = create(client, agent, n=1)
            client.post(f"/campaigns/{campaign_id}/start", headers=WS)
            (sid,) = wait_for(lambda: list(twilio.calls))
            callback = twilio.status_callback(sid, "busy")
            assert callback.url.startswith(f"{callback_base}/webhooks/twilio?attempt_id=")
            response = post_webhook(client, "twilio", callback)
            assert response.status_code == 200, response.text
            assert response.json()["effect"] == "applied"
            assert counters(client, campaign_id)["by_outcome"] == {"busy": 1}
            # signed for another URL (a callback meant for someone else): refused
            elsewhere = twilio.status_callback(sid, "completed", url="https://evil.example/hook")
            refused = post_webhook(client, "twilio", attrs.evolve(elsewhere, url=callback.url))
            assert refused.status_code == 401
            assert counters(client, campaign_id)["by_outcome"] == {"busy": 1}


def test_a_provider_without_a_webhook_secret_has_no_webhook_endpoint(
    example: ModuleType, database: str
) -> None:
    with TestClient(example.create_app({"OUTDIAL_DATABASE_URL": database})) as client:
        response = client.post("/webhooks/vapi", content=b"{}")
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"


# -- the API's errors ---------------------------------------------------------------------------


def test_api_errors_are_json_with_the_status_that_fits(example: ModuleType, database: str) -> None:
    with TestClient(example.create_app({"OUTDIAL_DATABASE_URL": database})) as client:
        campaign_id = create(client, {"provider": "simulated"})

        assert client.get(f"/campaigns/{campaign_id}").status_code == 400  # no workspace
        other = client.get(f"/campaigns/{campaign_id}", headers={"X-Workspace": "other"})
        assert other.status_code == 404 and other.json()["error"] == "NotFound"
        assert client.get("/campaigns/nope", headers=WS).status_code == 404

        paused = client.post(f"/campaigns/{campaign_id}/pause", headers=WS)
        assert paused.status_code == 409
        assert paused.json()["state"] == "ready" and paused.json()["action"] == "pause"
        assert client.post(f"/campaigns/{campaign_id}/launch", headers=WS).status_code == 404

        unconfigured = client.post(
            "/campaigns",
            headers=WS,
            json={
                "name": "No agent",
                "agent": {"provider": "twilio"},
                "recipients": [{"phone_number": "+12125550123"}],
            },
        )
        assert unconfigured.status_code == 422
        assert [p["field"] for p in unconfigured.json()["problems"]] == ["agent.provider"]

        bad_row = client.post(
            "/campaigns",
            headers=WS,
            json={
                "name": "Bad row",
                "agent": {"provider": "simulated"},
                "recipients": [{"phone_number": "+12125550123"}, {"phone_number": "12"}],
            },
        )
        assert bad_row.status_code == 422
        assert [p["field"] for p in bad_row.json()["problems"]] == ["recipients[1].phone_number"]

        unknown_field = client.post("/campaigns", headers=WS, json={"name": "x", "colour": "red"})
        assert unknown_field.status_code == 422
        assert unknown_field.json()["error"] == "ConfigurationError"

        # nothing refused was kept
        listed = client.app.state.outdial.service.list_campaigns("acme")
        assert [c.id for c in listed.items] == [campaign_id]


# -- offline, with simulated calls, and server-sent events -------------------------------------


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    kind = None
    for line in lines:
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            yield kind or "message", json.loads(line[len("data: ") :])


def test_offline_the_simulated_campaign_streams_its_progress_until_it_completes(
    example: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with TestClient(example.create_app({})) as client:  # no configuration at all
        assert client.app.state.outdial.registry.keys() == {"simulated"}
        campaign_id = create(client, {"provider": "simulated"}, n=2, concurrency_limit=2)
        client.post(f"/campaigns/{campaign_id}/start", headers=WS)
        with client.stream("GET", f"/campaigns/{campaign_id}/events", headers=WS) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = list(sse_events(stream.iter_lines()))  # ends when the campaign does
        final = client.get(f"/campaigns/{campaign_id}", headers=WS).json()
    assert (tmp_path / "outdial-service.sqlite").exists()  # the SQLite default
    kind, first = events[0]
    assert kind == "progress" and first["counters"]["total"] == 2
    assert events[-1][0] == "campaign_status_changed"
    assert events[-1][1]["new"] == "completed"
    assert any(k == "call_ended" for k, _ in events)
    assert final["campaign"]["status"] == "completed"
    assert final["stats"]["progress"] == 1.0
    assert final["stats"]["attempts"] == 2


def test_a_client_may_leave_the_event_stream_at_any_time(
    example: ModuleType, database: str
) -> None:
    with TestClient(example.create_app({"OUTDIAL_DATABASE_URL": database})) as client:
        campaign_id = create(client, {"provider": "simulated"}, n=3)
        outdial_app = client.app.state.outdial
        with client.stream("GET", f"/campaigns/{campaign_id}/events", headers=WS) as stream:
            kind, data = next(sse_events(stream.iter_lines()))
        assert kind == "progress" and data["status"] == "ready"
        assert wait_for(lambda: not outdial_app.bus._subscribers)  # the subscription ended
        missing = client.get("/campaigns/nope/events", headers=WS)
        assert missing.status_code == 404

"""The shared pieces: calls-per-second bucket, Retry-After, redaction, signature
helpers and the verify_and_parse entry point."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outdial.errors import (
    ConfigurationError,
    NaiveDatetimeError,
    WebhookPayloadError,
    WebhookVerificationError,
)
from outdial.outcomes import CallOutcome
from outdial.ports import WebhookRequest
from outdial.providers import (
    RetellProvider,
    RetellWebhook,
    TokenBucket,
    parse_retry_after,
    verify_and_parse,
    webhook_for,
)
from outdial.providers._http import redact
from outdial.providers._signing import check_fresh, epoch_instant, signature_params
from outdial.providers._wire import form_pairs

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_bucket_lets_a_burst_through_then_spaces_calls() -> None:
    clock = FakeTime()
    bucket = TokenBucket(4.0, burst=3, clock=lambda: clock.now, sleep=clock.sleep)
    for _ in range(6):
        bucket.acquire()
    assert clock.slept == [0.25, 0.25, 0.25]


def test_an_idle_bucket_refills_but_never_beyond_its_burst() -> None:
    clock = FakeTime()
    bucket = TokenBucket(1.0, burst=2, clock=lambda: clock.now, sleep=clock.sleep)
    bucket.acquire()
    clock.now += 100.0
    for _ in range(3):
        bucket.acquire()
    assert clock.slept == [1.0]


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.5, 50.0),
    burst=st.integers(1, 5),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=40),
)
def test_no_window_ever_holds_more_calls_than_rate_allows(
    rate: float, burst: int, gaps: list[float]
) -> None:
    clock = FakeTime()
    bucket = TokenBucket(rate, burst=burst, clock=lambda: clock.now, sleep=clock.sleep)
    starts = []
    for gap in gaps:
        clock.now += gap
        bucket.acquire()
        starts.append(clock.now)
    for i, first in enumerate(starts):
        window = [t for t in starts[i:] if t < first + 1.0 - 1e-9]
        assert len(window) <= burst + rate * 1.0 + 1e-6


def test_one_bucket_is_shared_by_threads_and_the_event_loop() -> None:
    lock = threading.Lock()
    clock = FakeTime()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        with lock:
            waits.append(seconds)

    async def async_sleep(seconds: float) -> None:
        sleep(seconds)

    bucket = TokenBucket(10.0, clock=lambda: clock.now, sleep=sleep, async_sleep=async_sleep)
    threads = [threading.Thread(target=bucket.acquire) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    async def five() -> None:
        await asyncio.gather(*(bucket.acquire_async() for _ in range(5)))

    asyncio.run(five())
    assert sorted(round(w, 6) for w in waits) == [round(0.1 * k, 6) for k in range(1, 10)]


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (1, 0)])
def test_a_bucket_needs_a_positive_rate_and_burst(rate: float, burst: int) -> None:
    with pytest.raises(ConfigurationError):
        TokenBucket(rate, burst)


@pytest.mark.parametrize(
    ("value", "date", "expected"),
    [
        ("7", None, timedelta(seconds=7)),
        ("1.5", None, timedelta(seconds=1.5)),
        ("Mon, 02 Mar 2026 15:02:00 GMT", "Mon, 02 Mar 2026 15:00:00 GMT", timedelta(minutes=2)),
        ("Mon, 02 Mar 2026 15:02:00 GMT", None, timedelta(minutes=2)),  # from ``now``
        ("Mon, 02 Mar 2026 14:00:00 GMT", None, timedelta(0)),  # already past
        ("-3", None, None),
        ("soon", None, None),
        ("", None, None),
        (None, None, None),
        ("1e300", None, None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(
    value: str | None, date: str | None, expected: timedelta | None
) -> None:
    assert parse_retry_after(value, date, now=NOW) == expected


def test_phone_numbers_are_masked_in_provider_messages() -> None:
    text = "The 'To' number +12125554567 is invalid; also 212-555-4567 and order 12345"
    assert (
        redact(text) == "The 'To' number +1******4567 is invalid; also ******4567 and order 12345"
    )


def test_signature_headers_split_into_repeatable_parts() -> None:
    assert signature_params("x", "t=1, v0=aa,v0=bb") == {"t": ["1"], "v0": ["aa", "bb"]}
    with pytest.raises(WebhookVerificationError, match="malformed"):
        signature_params("x", "t=1,garbage")


def test_epoch_timestamps_in_seconds_or_milliseconds() -> None:
    assert epoch_instant("x", "1772463600") == datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)
    assert epoch_instant("x", "1772463600000") == datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)
    assert epoch_instant("x", "1772463600", unit="ms").year == 1970
    for bad in ("nan", "-1", "soon", "1e400"):
        with pytest.raises(WebhookVerificationError):
            epoch_instant("x", bad)


def test_freshness_is_checked_both_ways() -> None:
    check_fresh("x", NOW - timedelta(minutes=5), NOW, timedelta(minutes=5))
    with pytest.raises(WebhookVerificationError, match="old"):
        check_fresh("x", NOW - timedelta(minutes=5, seconds=1), NOW, timedelta(minutes=5))
    with pytest.raises(WebhookVerificationError, match="in the future"):
        check_fresh("x", NOW + timedelta(minutes=6), NOW, timedelta(minutes=5))


# -- verify_and_parse -----------------------------------------------------------------------


def _retell_request(key: str = "k", at: datetime = NOW) -> WebhookRequest:
    call = {
        "call_id": "c1",
        "call_status": "ended",
        "disconnection_reason": "dial_no_answer",
        "metadata": {"attempt_id": "a9"},
    }
    body = json.dumps({"event": "call_ended", "call": call}).encode()
    ms = str(int(at.timestamp() * 1000))
    digest = hmac.new(key.encode(), body + ms.encode(), hashlib.sha256).hexdigest()
    return WebhookRequest(
        "POST", "https://app.example/r", {"X-Retell-Signature": f"v={ms},d={digest}"}, body
    )


def test_verify_and_parse_by_name_by_verifier_and_by_adapter() -> None:
    request = _retell_request()
    by_name = verify_and_parse("retell", request, now=NOW, api_key="k")
    by_verifier = verify_and_parse(RetellWebhook("k"), request, now=NOW)
    with RetellProvider("k") as adapter:
        by_adapter = verify_and_parse(adapter, request, now=NOW)
    assert by_name == by_verifier == by_adapter
    assert (by_name.outcome, by_name.attempt_id) == (CallOutcome.NO_ANSWER, "a9")


def test_verify_and_parse_refuses_unknown_providers_and_wrong_secrets() -> None:
    with pytest.raises(ConfigurationError, match="no webhook support"):
        webhook_for("inspra")
    with pytest.raises(ConfigurationError, match="do not fit"):
        webhook_for("retell", auth_token="x")
    with pytest.raises(ConfigurationError, match="not used with a verifier"):
        webhook_for(RetellWebhook("k"), api_key="k")
    with pytest.raises(WebhookVerificationError):
        verify_and_parse("retell", _retell_request(key="forged"), now=NOW, api_key="k")


def test_now_must_be_aware() -> None:
    with pytest.raises(NaiveDatetimeError):
        verify_and_parse("retell", _retell_request(), now=datetime(2026, 3, 2), api_key="k")


def test_secrets_never_show_in_reprs() -> None:
    assert "k-secret" not in repr(RetellWebhook("k-secret"))
    with RetellProvider("k-secret") as adapter:
        assert "k-secret" not in repr(adapter)


_FORM_TEXT = st.text(alphabet=st.sampled_from("ab=&+%2BF0 é€;"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(body=_FORM_TEXT | st.lists(st.tuples(st.text(), st.text()), max_size=5).map(urlencode))
def test_form_bodies_read_as_parse_qsl_reads_them(body: str) -> None:
    try:
        expected = parse_qsl(body, keep_blank_values=True, strict_parsing=bool(body))
    except ValueError:
        with pytest.raises(WebhookPayloadError, match="malformed"):
            form_pairs("twilio", body.encode())
        return
    assert form_pairs("twilio", body.encode()) == expected


def test_a_form_body_that_is_not_utf8_is_a_payload_error() -> None:
    with pytest.raises(WebhookPayloadError, match="not UTF-8"):
        form_pairs("twilio", b"a=\xff")

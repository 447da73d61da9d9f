"""Small helpers for what crosses the wire: webhook bodies, URL queries, fields.

Decoding failures raise :class:`~outdial.errors.WebhookPayloadError` naming the
provider, so a malformed webhook is refused with a clear reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from outdial.errors import WebhookPayloadError
from outdial.ports import WebhookRequest

__all__ = [
    "add_query",
    "body_fields",
    "form_pairs",
    "iso_instant",
    "json_object",
    "number",
    "path",
    "query_params",
    "text",
]

_UTC = timezone.utc


def add_query(url: str, params: Sequence[tuple[str, str]]) -> str:
    """``url`` with ``params`` appended to its query (existing parameters and
    any fragment kept)."""
    base, hash_, fragment = url.partition("#")
    joiner = "" if base.endswith(("?", "&")) else ("&" if "?" in base else "?")
    return base + joiner + urlencode(list(params)) + hash_ + fragment


def query_params(url: str) -> dict[str, str]:
    """The query parameters of ``url`` (first value of each)."""
    out: dict[str, str] = {}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        out.setdefault(name, value)
    return out


def json_object(provider: str, body: bytes) -> dict[str, Any]:
    """A JSON object body, or :class:`WebhookPayloadError`."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookPayloadError(provider, f"body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WebhookPayloadError(provider, "body is JSON but not an object")
    return data


def form_pairs(provider: str, body: bytes) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs of a form-encoded body, in order.

    What ``urllib.parse.parse_qsl(body, keep_blank_values=True,
    strict_parsing=True)`` gives (an empty body has no pairs), without its
    per-field overhead: ``+`` and ``%XX`` are only decoded where they occur.
    """
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookPayloadError(provider, "form body is not UTF-8") from None
    if not decoded:
        return []
    pairs: list[tuple[str, str]] = []
    for field in decoded.split("&"):
        name, sep, value = field.partition("=")
        if not sep:
            raise WebhookPayloadError(
                provider, f"form body is malformed (bad query field: {field!r})"
            )
        if "+" in name:
            name = name.replace("+", " ")
        if "%" in name:
            name = unquote(name)
        if "+" in value:
            value = value.replace("+", " ")
        if "%" in value:
            value = unquote(value)
        pairs.append((name, value))
    return pairs


def _multipart(provider: str, content_type: str, body: bytes) -> dict[str, Any]:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise WebhookPayloadError(provider, "multipart body without parts")
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                fields.setdefault(name, payload.decode("utf-8", "replace"))
    return fields


def body_fields(provider: str, request: WebhookRequest) -> dict[str, Any]:
    """The fields of a webhook body, whatever its encoding: JSON object, form or
    multipart form; the content type decides, a JSON-looking body without one
    is read as JSON."""
    content_type = (request.header("content-type") or "").strip()
    kind = content_type.split(";", 1)[0].strip().lower()
    body = request.body
    if kind == "multipart/form-data":
        return _multipart(provider, content_type, body)
    if kind.endswith("json") or (not kind and body.lstrip()[:1] in (b"{", b"[")):
        return json_object(provider, body)
    fields: dict[str, Any] = {}
    for name, value in form_pairs(provider, body):
        fields.setdefault(name, value)
    return fields


def path(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...`` or None where a step is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def text(value: Any) -> str | None:
    """A non-empty string value (numbers become their text), else None."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def number(provider: str, field: str, value: Any) -> float | None:
    """A finite number from a JSON number or numeric text; None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise WebhookPayloadError(provider, f"{field} is not a number: {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise WebhookPayloadError(provider, f"{field} is not a number: {value!r}") from None
    if not math.isfinite(result):
        raise WebhookPayloadError(provider, f"{field} is not a finite number: {value!r}")
    return result


def iso_instant(provider: str, field: str, value: Any) -> datetime | None:
    """An ISO 8601 instant (``Z`` accepted; naive means UTC); None when absent."""
    raw = text(value)
    if raw is None:
        return None
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise WebhookPayloadError(provider, f"{field} is not an ISO 8601 time: {raw!r}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=_UTC)

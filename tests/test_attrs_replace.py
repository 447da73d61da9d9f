from __future__ import annotations

from datetime import datetime, timezone

import attrs
import pytest

from outdial._attrs import replace
from outdial.recipient import Recipient, RecipientStatus

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_replace_equals_evolve() -> None:
    r = Recipient(id="r", campaign_id="c", workspace_id="w", phone="+12125550101", created_at=NOW)
    assert replace(r, status=RecipientStatus.QUEUED, attempts=1) == attrs.evolve(
        r, status=RecipientStatus.QUEUED, attempts=1
    )
    assert replace(r) == r and replace(r) is not r


def test_replace_refuses_unknown_fields() -> None:
    r = Recipient(id="r", campaign_id="c", workspace_id="w", phone="+12125550101", created_at=NOW)
    with pytest.raises(TypeError, match="no field"):
        replace(r, nope=1)


def test_copier_sets_the_named_fields_in_order() -> None:
    from outdial._attrs import copier

    r = Recipient(id="r", campaign_id="c", workspace_id="w", phone="+12125550101", created_at=NOW)
    move = copier(Recipient, "status", "attempts")
    moved = move(r, RecipientStatus.QUEUED, 2)
    assert moved == attrs.evolve(r, status=RecipientStatus.QUEUED, attempts=2)
    with pytest.raises(TypeError):
        copier(Recipient, "status", "status")
    with pytest.raises(TypeError):
        copier(Recipient, "nope")

"""Participants: residents known by their identity-provider subject, organisations by their code."""

from __future__ import annotations

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from app.auth import Principal
from app.ledger.accounts import open_holder_accounts, remember_holder
from app.ledger.models import Asset
from app.sql import fetch


class Participant(Model):
    """Anyone holding an account: an individual (resident) or an organisation."""

    id = fields.BigIntField(primary_key=True)
    kind = fields.CharField(max_length=16)  # individual | organisation
    subject = fields.CharField(max_length=128, null=True, unique=True)
    org_code = fields.CharField(max_length=18, null=True, unique=True)
    display_name = fields.CharField(max_length=128, default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "participant"


_cache: dict[str, int] = {}
CACHE_SIZE = 200_000  # ids never change; the cache is cleared when full


def mask_subject(subject: str) -> str:
    """A display form of a subject that never shows the whole identifier."""
    if len(subject) <= 4:
        return "*" * len(subject)
    return f"{subject[:2]}{'*' * min(6, len(subject) - 4)}{subject[-2:]}"


async def _get_or_create(key: str, **values: str) -> int:
    cached = _cache.get(key)
    if cached is not None:
        return cached
    column = "subject" if "subject" in values else "org_code"
    found = await _find(column, values[column])
    if found is None:
        try:
            async with in_transaction():  # a participant never exists without its accounts
                row = await Participant.create(**values)
                opened = await open_holder_accounts(row.id)
            found = row.id
            for asset, account_id in opened.items():
                remember_holder(found, asset, account_id, values["kind"] == "individual")
        except IntegrityError:
            found = await _find(column, values[column])
            if found is None:
                raise
    if len(_cache) >= CACHE_SIZE:
        _cache.clear()
    _cache[key] = found
    return found


async def _find(column: str, value: str) -> int | None:
    """A participant's id by its subject or organisation code, with its accounts' ids kept for
    the ledger (one indexed lookup)."""
    rows = await fetch(
        "SELECT p.id AS id, p.kind AS kind, a.id AS account_id, a.asset AS asset FROM participant p"
        f" LEFT JOIN ledger_account a ON a.participant_id = p.id WHERE p.{column} = $1",
        [value],
    )
    if not rows:
        return None
    participant_id = int(rows[0]["id"])
    for row in rows:
        if row["account_id"] is not None:
            remember_holder(participant_id, Asset(row["asset"]), int(row["account_id"]),
                            row["kind"] == "individual")
    return participant_id


async def resident_id(principal: Principal) -> int:
    """The participant id of a resident, opening their carbon account on first sight."""
    name = principal.name or f"居民{mask_subject(principal.subject)}"
    return await _get_or_create(
        f"s:{principal.subject}", kind="individual", subject=principal.subject, display_name=name
    )


async def organisation_id(org_code: str, name: str | None = None) -> int:
    """The participant id of an organisation, known by its code from its first request."""
    return await _get_or_create(
        f"o:{org_code}", kind="organisation", org_code=org_code, display_name=name or org_code
    )


def forget_cache() -> None:
    """Drop cached ids (tests that recreate the database)."""
    _cache.clear()

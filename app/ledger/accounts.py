"""Opening and finding ledger accounts: holders' accounts and the system accounts."""

from __future__ import annotations

from enum import StrEnum

from tortoise.exceptions import IntegrityError

from app.errors import NotFound
from app.ledger.models import Account, AccountKind, Asset


class SystemAccount(StrEnum):
    """The system accounts units come from and go to."""

    GRAMS_ISSUANCE = "GRAMS_ISSUANCE"
    CONVERSION_RESERVE = "CONVERSION_RESERVE"
    GRAMS_RETIRED = "GRAMS_RETIRED"
    POINTS_ISSUANCE = "POINTS_ISSUANCE"
    POINTS_BOUGHT_BACK = "POINTS_BOUGHT_BACK"


SYSTEM_LAYOUT: dict[SystemAccount, tuple[Asset, AccountKind]] = {
    SystemAccount.GRAMS_ISSUANCE: (Asset.REDUCTION_GRAMS, AccountKind.ISSUANCE),
    SystemAccount.CONVERSION_RESERVE: (Asset.REDUCTION_GRAMS, AccountKind.RESERVE),
    SystemAccount.GRAMS_RETIRED: (Asset.REDUCTION_GRAMS, AccountKind.RETIRED),
    SystemAccount.POINTS_ISSUANCE: (Asset.POINTS, AccountKind.ISSUANCE),
    SystemAccount.POINTS_BOUGHT_BACK: (Asset.POINTS, AccountKind.BURNED),
}

_system_ids: dict[SystemAccount, int] = {}
_holder_ids: dict[tuple[int, Asset], int] = {}


async def system_account_id(code: SystemAccount) -> int:
    """The id of a system account, opening it on first use."""
    cached = _system_ids.get(code)
    if cached is not None:
        return cached
    row = await Account.filter(code=code.value).only("id").first()
    if row is None:
        asset, kind = SYSTEM_LAYOUT[code]
        try:
            row = await Account.create(code=code.value, asset=asset.value, kind=kind.value)
        except IntegrityError:
            row = await Account.get(code=code.value)
    _system_ids[code] = row.id
    return row.id


async def open_holder_accounts(participant_id: int) -> None:
    """Open a participant's grams and points accounts (idempotent)."""
    for asset in Asset:
        await holder_account_id(participant_id, asset)


async def holder_account_id(participant_id: int, asset: Asset) -> int:
    """The id of a participant's account of `asset`, opening it if needed."""
    cached = _holder_ids.get((participant_id, asset))
    if cached is not None:
        return cached
    row = await Account.filter(participant_id=participant_id, asset=asset.value).only("id").first()
    if row is None:
        try:
            row = await Account.create(participant_id=participant_id, asset=asset.value)
        except IntegrityError:
            row = await Account.get(participant_id=participant_id, asset=asset.value)
    _holder_ids[(participant_id, asset)] = row.id
    return row.id


async def balances(participant_id: int) -> dict[Asset, tuple[int, int]]:
    """A participant's (balance, pending) per asset; zeros for accounts not opened yet."""
    rows = await Account.filter(participant_id=participant_id).values("asset", "balance", "pending")
    found = {Asset(r["asset"]): (r["balance"], r["pending"]) for r in rows}
    return {asset: found.get(asset, (0, 0)) for asset in Asset}


async def get_account(account_id: int) -> Account:
    """An account by id, or NotFound."""
    row = await Account.filter(id=account_id).first()
    if row is None:
        raise NotFound("No such account.")
    return row


def forget_cache() -> None:
    """Drop cached account ids (tests that recreate the database)."""
    _system_ids.clear()
    _holder_ids.clear()

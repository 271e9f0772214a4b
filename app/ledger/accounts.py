"""Opening and finding ledger accounts: holders' accounts and the system accounts."""

from __future__ import annotations

from enum import StrEnum

from tortoise import connections
from tortoise.backends.base.client import TransactionalDBClient

from app.ledger.models import Account, AccountKind, Asset
from app.ledger.posting import note_account
from app.sql import fetch, insert_rows


class SystemAccount(StrEnum):
    """The system accounts units come from and go to."""

    GRAMS_ISSUANCE = "GRAMS_ISSUANCE"
    CONVERSION_RESERVE = "CONVERSION_RESERVE"
    GRAMS_RETIRED = "GRAMS_RETIRED"
    POINTS_ISSUANCE = "POINTS_ISSUANCE"
    POINTS_BOUGHT_BACK = "POINTS_BOUGHT_BACK"


_system_ids: dict[SystemAccount, int] = {}
_holder_ids: dict[tuple[int, Asset], int] = {}
HOLDER_CACHE_SIZE = 400_000  # ids never change; the cache is cleared when full

_FIND_HOLDER = (
    "SELECT a.id AS id, p.kind AS owner FROM ledger_account a"
    " JOIN participant p ON p.id = a.participant_id WHERE a.participant_id = $1 AND a.asset = $2"
)
_HOLDER_COLUMNS = ("asset", "kind", "participant_id", "balance", "pending")
_IF_NEW = " ON CONFLICT (participant_id, asset) DO NOTHING RETURNING id, asset"


async def system_account_id(code: SystemAccount) -> int:
    """The id of a system account (the migrations open all of them)."""
    cached = _system_ids.get(code)
    if cached is not None:
        return cached
    row = await Account.filter(code=code.value).only("id").first()
    if row is None:
        raise RuntimeError(f"System account {code} is missing: run `puhui migrate`.")
    _system_ids[code] = row.id
    return row.id


async def _holder_account(participant_id: int, asset: Asset) -> int | None:
    rows = await fetch(_FIND_HOLDER, [participant_id, asset.value])
    if not rows:
        return None
    remember_holder(participant_id, asset, int(rows[0]["id"]), rows[0]["owner"] == "individual")
    return int(rows[0]["id"])


def remember_holder(participant_id: int, asset: Asset, account_id: int, individual: bool) -> None:
    """Keep a holder account's id (and what the ledger needs to know of it) for the process,
    unless it was read inside a transaction: no other transaction may be handed an account
    that is not committed (or was rolled back)."""
    if isinstance(connections.get("default"), TransactionalDBClient):
        return
    if len(_holder_ids) >= HOLDER_CACHE_SIZE:
        _holder_ids.clear()
    _holder_ids[(participant_id, asset)] = account_id
    note_account(account_id, asset, AccountKind.HOLDER, individual)


async def _open(participant_id: int, assets: list[Asset]) -> dict[Asset, int]:
    """Insert the participant's missing holder accounts of `assets`; the ids of those opened now
    (an insert that yields to a concurrent one, so it never aborts the caller's transaction)."""
    rows = await insert_rows(
        connections.get("default"), "ledger_account", _HOLDER_COLUMNS,
        [(asset.value, AccountKind.HOLDER.value, participant_id, 0, 0) for asset in assets], _IF_NEW,
    )
    return {Asset(r["asset"]): int(r["id"]) for r in rows}


async def open_holder_accounts(participant_id: int) -> dict[Asset, int]:
    """Open a participant's grams and points accounts (idempotent); their ids by asset."""
    opened = await _open(participant_id, list(Asset))
    for asset in Asset:
        if asset not in opened:  # opened before
            opened[asset] = await holder_account_id(participant_id, asset)
    return opened


async def holder_account_id(participant_id: int, asset: Asset) -> int:
    """The id of a participant's account of `asset`, opening it if needed.

    Ids are kept as `remember_holder` says. Opening is an insert that yields to a concurrent
    one, so it never aborts the caller's transaction.
    """
    cached = _holder_ids.get((participant_id, asset))
    if cached is not None:
        return cached
    found = await _holder_account(participant_id, asset)
    if found is None:
        await _open(participant_id, [asset])
        found = await _holder_account(participant_id, asset)
        if found is None:  # pragma: no cover - the insert above or a concurrent one made it
            raise RuntimeError("A holder account could not be opened.")
    return found


async def balances(participant_id: int) -> dict[Asset, tuple[int, int]]:
    """A participant's (balance, pending) per asset; zeros for accounts not opened yet."""
    rows = await Account.filter(participant_id=participant_id).values("asset", "balance", "pending")
    found = {Asset(r["asset"]): (r["balance"], r["pending"]) for r in rows}
    return {asset: found.get(asset, (0, 0)) for asset in Asset}


def forget_cache() -> None:
    """Drop cached account ids (tests that recreate the database)."""
    _system_ids.clear()
    _holder_ids.clear()

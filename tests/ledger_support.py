"""Putting grams and points in accounts for tests, through the real ledger."""

from __future__ import annotations

import uuid

from tortoise.transactions import in_transaction

from app.ledger.accounts import SystemAccount, holder_account_id, system_account_id
from app.ledger.models import Asset, EntryKind, Lot
from app.ledger.posting import Posting, post


async def issue_grams(participant_id: int, grams: int, methodology_class: str = "II") -> int:
    """Issue `grams` in a new lot straight to a participant; return the lot id."""
    async with in_transaction() as conn:
        lot = await Lot.create(
            serial_prefix=f"TEST-{uuid.uuid4().hex[:12]}",
            source_type="scenario",
            source_code="TEST",
            methodology_code="TEST-M",
            methodology_version="1.0",
            methodology_class=methodology_class,
            vintage=2026,
            issued_grams=grams,
            using_db=conn,
        )
        await post(
            conn,
            [
                Posting(
                    asset=Asset.REDUCTION_GRAMS,
                    debit=await system_account_id(SystemAccount.GRAMS_ISSUANCE),
                    credit=await holder_account_id(participant_id, Asset.REDUCTION_GRAMS),
                    amount=grams,
                    kind=EntryKind.ISSUANCE,
                    reference=f"test-lot:{lot.id}",
                    lots=((lot.id, grams),),
                )
            ],
        )
    return lot.id


async def issue_points(participant_id: int, points: int) -> None:
    """Issue points straight to a participant (a test shortcut around conversion)."""
    async with in_transaction() as conn:
        await post(
            conn,
            [
                Posting(
                    asset=Asset.POINTS,
                    debit=await system_account_id(SystemAccount.POINTS_ISSUANCE),
                    credit=await holder_account_id(participant_id, Asset.POINTS),
                    amount=points,
                    kind=EntryKind.ISSUANCE,
                    reference="test-points",
                )
            ],
        )

"""The bulk issuance path writes exactly what `post()` writes, and the ledger still verifies."""

from __future__ import annotations

import uuid

import pytest
from tortoise.transactions import in_transaction

from app.errors import InvalidInput
from app.ledger.accounts import SystemAccount, holder_account_id, system_account_id
from app.ledger.bulk import holder_accounts, issue_lot
from app.ledger.models import Account, Asset, Entry, EntryKind, Lot, LotHolding, Transfer, TransferLot
from app.ledger.posting import Posting, post
from app.ledger.verify import verify
from app.participants import organisation_id
from tests.helpers import unique
from tests.ledger_support import issue_grams


async def _lot(grams: int, conn=None) -> int:
    lot = await Lot.create(
        serial_prefix=f"BULK-{uuid.uuid4().hex[:12]}", source_type="scenario", source_code="BULK",
        methodology_code="BULK-M", methodology_version="1.0", methodology_class="II", vintage=2026,
        issued_grams=grams, using_db=conn,
    )
    return lot.id


async def _shape(account_ids: list[int], lot_id: int) -> list[tuple]:
    """What a holder sees of an issuance, independent of ids: entries, holdings, balance."""
    shape = []
    for account_id in account_ids:
        entries = await Entry.filter(account_id=account_id).order_by("id").values_list(
            "kind", "asset", "amount", "balance_after", "memo")
        transfers = await Transfer.filter(credit_account_id=account_id).order_by("id").values_list(
            "kind", "amount", "reference", "memo")
        lots = await TransferLot.filter(
            transfer_id__in=[t.id for t in await Transfer.filter(credit_account_id=account_id)]
        ).values_list("amount", flat=True)
        held = await LotHolding.filter(account_id=account_id, lot_id=lot_id).values_list(
            "balance", flat=True)
        balance = (await Account.get(id=account_id)).balance
        shape.append((entries[-1:], transfers[-1:], sorted(lots)[-1:], held, balance))
    return shape


async def test_issue_lot_matches_post_for_every_holder(database):
    issuance = await system_account_id(SystemAccount.GRAMS_ISSUANCE)
    people = [[await organisation_id(unique("BULK")[:18]) for _ in range(3)] for _ in range(2)]
    # Each side's holders already hold grams of an older lot, so balances after are not trivial.
    for side in people:
        for n, pid in enumerate(side):
            await issue_grams(pid, 10 * (n + 1))
    grams = [5, 70, 300]
    via_post = [await holder_account_id(pid, Asset.REDUCTION_GRAMS) for pid in people[0]]
    via_bulk = [await holder_account_id(pid, Asset.REDUCTION_GRAMS) for pid in people[1]]

    lot_post = await _lot(sum(grams))
    async with in_transaction() as conn:
        await post(conn, [
            Posting(Asset.REDUCTION_GRAMS, issuance, acc, g, kind=EntryKind.ISSUANCE, reference="same-ref",
                    memo="SERIAL", lots=((lot_post, g),))
            for acc, g in sorted(zip(via_post, grams, strict=True))
        ])
    start = (await Account.get(id=issuance)).balance
    lot_bulk = await _lot(sum(grams))
    async with in_transaction() as conn:
        await issue_lot(conn, lot_bulk, list(zip(via_bulk, grams, strict=True)), "same-ref", "SERIAL")

    assert await _shape(via_bulk, lot_bulk) == await _shape(via_post, lot_post)
    debits = await Entry.filter(account_id=issuance).order_by("-id").limit(3).values_list(
        "amount", "balance_after")
    ordered = sorted(zip(via_bulk, grams, strict=True))
    expected, running = [], start
    for _, g in ordered:
        running -= g
        expected.append((-g, running))
    assert list(reversed(debits)) == expected
    assert (await Account.get(id=issuance)).balance == start - sum(grams)
    report = await verify()
    assert report.ok, report.problems


async def test_issue_lot_refuses_credits_that_do_not_add_up_and_writes_nothing(database):
    pid = await organisation_id(unique("BULK")[:18])
    account = await holder_account_id(pid, Asset.REDUCTION_GRAMS)
    lots = []
    for credits in ([(account, 99)], [(account, 50), (account, 50)], [(account, 0)]):
        with pytest.raises(InvalidInput):
            async with in_transaction() as conn:
                lots.append(await _lot(100, conn))
                await issue_lot(conn, lots[-1], credits, "bad")
    assert await Lot.filter(id__in=lots).count() == 0
    assert (await Account.get(id=account)).balance == 0


async def test_a_lot_is_issued_once(database):
    pid = await organisation_id(unique("BULK")[:18])
    account = await holder_account_id(pid, Asset.REDUCTION_GRAMS)
    lot = await _lot(40)
    async with in_transaction() as conn:
        await issue_lot(conn, lot, [(account, 40)], "once")
    with pytest.raises(InvalidInput):
        async with in_transaction() as conn:
            await issue_lot(conn, lot, [(account, 40)], "twice")
    assert (await Account.get(id=account)).balance == 40
    assert await LotHolding.filter(lot_id=lot).values_list("balance", flat=True) == [40]


async def test_bulk_issuances_and_postings_to_the_same_residents_at_once_all_land(database):
    import asyncio

    from app.participants import Participant

    # The issuance account is older (a lower id) than the residents' accounts, as in production.
    await system_account_id(SystemAccount.GRAMS_ISSUANCE)
    people = [(await Participant.create(kind="individual", subject=unique("bulk-res"))).id
              for _ in range(4)]
    accounts = [await holder_account_id(pid, Asset.REDUCTION_GRAMS) for pid in people]

    async def bulk() -> None:
        async with in_transaction() as conn:
            lot = await _lot(40, conn)
            await issue_lot(conn, lot, [(a, 10) for a in accounts], "bulk-race")

    # post() locks residents first and the issuance account last; issue_lot does the same.
    await asyncio.gather(*(f() for _ in range(4) for f in (bulk, lambda: issue_grams(people[0], 5))))
    assert [(await Account.get(id=a)).balance for a in accounts] == [60, 40, 40, 40]
    report = await verify()
    assert report.ok, report.problems


async def test_holder_accounts_opens_the_missing_ones(database):
    from app.participants import Participant

    fresh = await Participant.create(kind="individual", subject=unique("bulk-sub"))
    known = await organisation_id(unique("BULK")[:18])
    async with in_transaction() as conn:
        found = await holder_accounts(conn, [fresh.id, known], Asset.REDUCTION_GRAMS)
    assert set(found) == {fresh.id, known}
    assert found[known] == await holder_account_id(known, Asset.REDUCTION_GRAMS)
    assert (await Account.get(id=found[fresh.id])).participant_id == fresh.id

"""The ledger keeps double entry, never goes negative, and traces grams to their lots."""

from __future__ import annotations

import asyncio

import pytest
from tortoise.exceptions import IntegrityError, OperationalError
from tortoise.transactions import in_transaction

from app.auth import Principal
from app.errors import InsufficientPoints, InsufficientReductions, NotEligible
from app.ledger.accounts import SystemAccount, holder_account_id, system_account_id
from app.ledger.models import Account, Asset, EntryKind, LotHolding
from app.ledger.posting import Posting, hold, post, release
from app.ledger.verify import verify
from app.participants import organisation_id, resident_id
from tests.helpers import unique
from tests.ledger_support import issue_grams


async def _holder() -> int:
    return await organisation_id(unique("ORG")[:18])


async def test_transfer_moves_lots_oldest_first_and_verifies(database):
    a, b = await _holder(), await _holder()
    old = await issue_grams(a, 300)
    new = await issue_grams(a, 500)
    acc_a = await holder_account_id(a, Asset.REDUCTION_GRAMS)
    acc_b = await holder_account_id(b, Asset.REDUCTION_GRAMS)
    async with in_transaction() as conn:
        [done] = await post(conn, [Posting(Asset.REDUCTION_GRAMS, acc_a, acc_b, 400,
                                           EntryKind.TRANSFER, "test")])
    assert done.lots == [(old, 300), (new, 100)]
    assert done.debit_balance_after == 400 and done.credit_balance_after == 400
    held = {h.lot_id: h.balance for h in await LotHolding.filter(account_id=acc_b)}
    assert held == {old: 300, new: 100}
    assert (await verify()).ok


async def test_overdraw_is_refused_and_changes_nothing(database):
    a, b = await _holder(), await _holder()
    await issue_grams(a, 100)
    acc_a = await holder_account_id(a, Asset.REDUCTION_GRAMS)
    acc_b = await holder_account_id(b, Asset.REDUCTION_GRAMS)
    with pytest.raises(InsufficientReductions):
        async with in_transaction() as conn:
            await post(conn, [Posting(Asset.REDUCTION_GRAMS, acc_a, acc_b, 101,
                                      EntryKind.TRANSFER, "test")])
    assert (await Account.get(id=acc_a)).balance == 100
    assert (await Account.get(id=acc_b)).balance == 0


async def test_database_refuses_a_negative_holder_balance(database):
    a = await _holder()
    acc = await holder_account_id(a, Asset.POINTS)
    with pytest.raises((IntegrityError, OperationalError)):
        await Account.filter(id=acc).update(balance=-1)


async def test_class_restricted_draw_is_not_eligible_without_class_i(database):
    a, b = await _holder(), await _holder()
    await issue_grams(a, 100, methodology_class="II")
    acc_a = await holder_account_id(a, Asset.REDUCTION_GRAMS)
    acc_b = await holder_account_id(b, Asset.REDUCTION_GRAMS)
    with pytest.raises(NotEligible):
        async with in_transaction() as conn:
            await post(conn, [Posting(Asset.REDUCTION_GRAMS, acc_a, acc_b, 50,
                                      EntryKind.RETIREMENT, "test", lot_class="I")])


async def test_hold_counts_against_available_until_released(database):
    a, b = await _holder(), await _holder()
    await issue_grams(a, 100)
    acc_a = await holder_account_id(a, Asset.REDUCTION_GRAMS)
    acc_b = await holder_account_id(b, Asset.REDUCTION_GRAMS)
    async with in_transaction() as conn:
        await hold(conn, acc_a, 80)
    with pytest.raises(InsufficientReductions):
        async with in_transaction() as conn:
            await post(conn, [Posting(Asset.REDUCTION_GRAMS, acc_a, acc_b, 30,
                                      EntryKind.TRANSFER, "test")])
    async with in_transaction() as conn:
        await post(conn, [Posting(Asset.REDUCTION_GRAMS, acc_a, acc_b, 80,
                                  EntryKind.TRANSFER, "test", release_pending=80)])
    row = await Account.get(id=acc_a)
    assert (row.balance, row.pending) == (20, 0)
    async with in_transaction() as conn:
        await hold(conn, acc_a, 20)
    async with in_transaction() as conn:
        await release(conn, acc_a, 20)
    assert (await Account.get(id=acc_a)).pending == 0


async def test_concurrent_transfers_never_overdraw(database):
    a, b = await _holder(), await _holder()
    await issue_grams(a, 1000)
    acc_a = await holder_account_id(a, Asset.REDUCTION_GRAMS)
    acc_b = await holder_account_id(b, Asset.REDUCTION_GRAMS)

    async def attempt() -> bool:
        try:
            async with in_transaction() as conn:
                await post(conn, [Posting(Asset.REDUCTION_GRAMS, acc_a, acc_b, 70,
                                          EntryKind.TRANSFER, "test")])
            return True
        except InsufficientReductions:
            return False

    results = await asyncio.gather(*(attempt() for _ in range(30)))
    assert sum(results) == 14
    assert (await Account.get(id=acc_a)).balance == 1000 - 14 * 70
    assert (await verify()).ok


async def test_system_accounts_are_opened_once(database):
    first = await system_account_id(SystemAccount.CONVERSION_RESERVE)
    assert first == await system_account_id(SystemAccount.CONVERSION_RESERVE)


async def test_opposite_transfers_between_a_resident_and_an_organisation_never_deadlock(database):
    person = await resident_id(Principal(subject=unique("res"), roles=frozenset({"resident"})))
    org = await _holder()
    await issue_grams(person, 1000)
    await issue_grams(org, 1000)
    acc_p = await holder_account_id(person, Asset.REDUCTION_GRAMS)
    acc_o = await holder_account_id(org, Asset.REDUCTION_GRAMS)

    async def move(debit: int, credit: int) -> None:
        async with in_transaction() as conn:
            await post(conn, [Posting(Asset.REDUCTION_GRAMS, debit, credit, 10, EntryKind.TRANSFER, "test")])

    moves = [move(acc_p, acc_o) if i % 2 else move(acc_o, acc_p) for i in range(40)]
    await asyncio.gather(*moves)
    assert (await Account.get(id=acc_p)).balance == 1000
    assert (await Account.get(id=acc_o)).balance == 1000
    assert (await verify()).ok


async def test_accounts_opened_inside_concurrent_transactions_stay_consistent(database):
    """Sixteen issuances at once to four people whose accounts are not open yet: every one
    lands (no transaction is handed an account another one has not committed) and the ledger
    verifies."""
    from app.ledger import accounts
    from app.participants import Participant

    people = [(await Participant.create(kind="individual", subject=unique("race"))).id for _ in range(4)]
    accounts.forget_cache()
    results = await asyncio.gather(
        *(issue_grams(people[n % 4], 10 + n) for n in range(16)), return_exceptions=True
    )
    assert [r for r in results if isinstance(r, Exception)] == []
    for n, pid in enumerate(people):
        account = await Account.get(participant_id=pid, asset=Asset.REDUCTION_GRAMS.value)
        assert account.balance == sum(10 + k for k in range(n, 16, 4))
    assert (await verify()).ok


async def test_an_account_never_dips_below_zero_midway_through_one_posting_list(database):
    """Postings apply in order: A may not pay B back 100 before B paid A, even if the net is 0."""
    a, b = await _holder(), await _holder()
    acc_a = await holder_account_id(a, Asset.POINTS)
    acc_b = await holder_account_id(b, Asset.POINTS)
    with pytest.raises(InsufficientPoints):
        async with in_transaction() as conn:
            await post(conn, [
                Posting(Asset.POINTS, acc_a, acc_b, 100, EntryKind.TRANSFER, "test"),
                Posting(Asset.POINTS, acc_b, acc_a, 100, EntryKind.TRANSFER, "test"),
            ])
    assert [(await Account.get(id=acc)).balance for acc in (acc_a, acc_b)] == [0, 0]


async def test_a_posting_list_larger_than_one_statement_lands_whole(database):
    """16,000 transfers in one post() (an issuance to as many people) are written in several
    statements within the databases' parameter limits, each with its entries."""
    from app.ledger.models import Entry, Transfer

    pid = await _holder()
    account = await holder_account_id(pid, Asset.POINTS)
    issuance = await system_account_id(SystemAccount.POINTS_ISSUANCE)
    reference = unique("many")
    async with in_transaction() as conn:
        posted = await post(conn, [
            Posting(Asset.POINTS, issuance, account, 1, EntryKind.ISSUANCE, reference)
            for _ in range(16_000)
        ])
    assert [p.credit_balance_after for p in posted[:3]] == [1, 2, 3]
    assert posted[-1].credit_balance_after == 16_000
    assert await Transfer.filter(reference=reference).count() == 16_000
    assert await Entry.filter(account_id=account).count() == 16_000
    assert (await Account.get(id=account)).balance == 16_000


async def test_posting_works_while_the_account_cache_is_emptied(database, monkeypatch):
    """The per-process account cache may empty at any time; a posting never fails for it."""
    from app.ledger import posting as posting_module

    monkeypatch.setattr(posting_module, "_META_LIMIT", 2)
    for _ in range(3):
        a, b = await _holder(), await _holder()
        await issue_grams(a, 10)
        acc_a = await holder_account_id(a, Asset.REDUCTION_GRAMS)
        acc_b = await holder_account_id(b, Asset.REDUCTION_GRAMS)
        async with in_transaction() as conn:
            await post(conn, [Posting(Asset.REDUCTION_GRAMS, acc_a, acc_b, 10, EntryKind.TRANSFER, "t")])
        assert (await Account.get(id=acc_b)).balance == 10

"""Test helpers of the mall: approved merchants, rights, residents with points, ledger reads."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.auth import Principal
from app.ledger.accounts import SystemAccount, holder_account_id, system_account_id
from app.ledger.models import Account, Asset
from app.participants import organisation_id, resident_id
from app.redis import get_store
from mall import redeeming, stock_gate
from tests.helpers import credit_code, data, gql, op, token, unique, user_error_codes
from tests.ledger_support import issue_points

CENTER = token("mall-center", "center")
EXCHANGE = token("mall-exchange", "exchange")


@dataclass(frozen=True)
class MerchantOrg:
    """A merchant organisation in the tests: its code, token, participant and merchant ids."""

    code: str
    auth: str
    participant_id: int
    merchant_id: str


@dataclass(frozen=True)
class ResidentAcct:
    """A resident in the tests: subject, token and participant id."""

    subject: str
    auth: str
    participant_id: int


def iso(delta: timedelta) -> str:
    """A timestamp `delta` from now, ISO 8601 with offset."""
    return (datetime.now(UTC) + delta).isoformat()


async def apply(client, code: str | None = None, name: str | None = None,
                contact: str = "13800138000") -> tuple[str, str, dict]:
    """Apply as a new merchant organisation; (code, token, payload)."""
    code = code or credit_code()
    auth = token(unique("mer"), "merchant", org=code)
    body = await op(client, "ApplyMerchant", {"input": {
        "name": name or f"商户 {code[-6:]}", "creditCode": code, "contact": contact}}, auth)
    return code, auth, data(body)["applyMerchant"]


async def review(client, merchant_id: str, approve: bool = True, auth: str = CENTER,
                 comment: str | None = None) -> dict:
    """ReviewMerchant; the payload."""
    body = await op(client, "ReviewMerchant",
                    {"input": {"id": merchant_id, "approve": approve, "comment": comment}}, auth)
    return data(body)["reviewMerchant"]


async def approved_merchant(client) -> MerchantOrg:
    """A merchant that applied and was approved."""
    code, auth, payload = await apply(client)
    assert payload["userErrors"] == [], payload
    merchant_id = payload["merchant"]["id"]
    assert (await review(client, merchant_id))["userErrors"] == []
    return MerchantOrg(code, auth, await organisation_id(code), merchant_id)


async def create_right(client, merchant: MerchantOrg, **fields: Any) -> dict:
    """CreateRight with sensible defaults; the payload."""
    values: dict[str, Any] = {
        "title": unique("权益 "), "description": "A cup of coffee", "category": "food",
        "pointsPrice": "100", "stock": 10,
    }
    values.update(fields)
    body = await op(client, "CreateRight", {"input": values}, merchant.auth)
    return data(body)["createRight"]


async def listed_right(client, merchant: MerchantOrg, **fields: Any) -> str:
    """A right on sale now; its id."""
    payload = await create_right(client, merchant, **fields)
    assert payload["userErrors"] == [], payload
    return payload["right"]["id"]


async def resident(points: int = 0) -> ResidentAcct:
    """A new resident holding `points`."""
    subject = unique("res")
    participant_id = await resident_id(Principal(subject, frozenset({"resident"})))
    if points:
        await issue_points(participant_id, points)
    return ResidentAcct(subject, token(subject), participant_id)


async def redeem(client, who: ResidentAcct, right_id: str, quantity: int = 1,
                 key: str | None = None) -> dict:
    """RedeemRight; the payload."""
    body = await op(client, "RedeemRight", {"input": {
        "rightId": right_id, "quantity": quantity, "idempotencyKey": key or unique("k")}}, who.auth)
    return data(body)["redeemRight"]


async def cancel(client, who: ResidentAcct, redemption_id: str, key: str | None = None) -> dict:
    """CancelRedemption; the payload."""
    body = await op(client, "CancelRedemption", {"input": {
        "redemptionId": redemption_id, "idempotencyKey": key or unique("k")}}, who.auth)
    return data(body)["cancelRedemption"]


async def write_off(client, merchant: MerchantOrg, code: str) -> dict:
    """WriteOffVoucher; the payload."""
    body = await op(client, "WriteOffVoucher", {"input": {"voucherCode": code}}, merchant.auth)
    return data(body)["writeOffVoucher"]


async def points_of(participant_id: int) -> tuple[int, int]:
    """(balance, pending) of a participant's points account."""
    account = await Account.get(id=await holder_account_id(participant_id, Asset.POINTS))
    return account.balance, account.pending


async def grams_of(participant_id: int) -> int:
    """Grams balance of a participant."""
    return (await Account.get(id=await holder_account_id(participant_id, Asset.REDUCTION_GRAMS))).balance


async def system_balance(code: SystemAccount) -> int:
    """Balance of a system account."""
    return (await Account.get(id=await system_account_id(code))).balance


async def stock_of(client, right_id: str, merchant: MerchantOrg) -> int:
    """stockRemaining of a right as its merchant sees it."""
    query = "query { myMerchant { rights(first: 100) { edges { node { id stockRemaining } } } } }"
    body = await gql(client, query, auth=merchant.auth)
    for edge in data(body)["myMerchant"]["rights"]["edges"]:
        if edge["node"]["id"] == right_id:
            return edge["node"]["stockRemaining"]
    raise AssertionError("right not found")


async def listing(client, auth: str, first: int = 100, after: str | None = None,
                  category: str | None = None) -> dict:
    """MallRights; the connection."""
    body = await op(client, "MallRights", {"first": first, "after": after, "category": category}, auth)
    return data(body)["rights"]


def outcome(payload: dict) -> str:
    """OK, or the code of a redemption payload's one userError."""
    return user_error_codes(payload)[0] if payload["userErrors"] else "OK"


def count_groups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the redemption groups committed together from now on."""
    sizes: list[int] = []
    together = redeeming._together

    async def counted(right_id: int, group: list) -> tuple:
        sizes.append(len(group))
        return await together(right_id, group)

    monkeypatch.setattr(redeeming, "_together", counted)
    return sizes


def as_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's stock gate as it starts: no mark it could not write is noted (a test that
    ran with the store down leaves one)."""
    monkeypatch.setattr(stock_gate, "_marks", {"lost": 0.0})


def marks_since_key() -> str:
    """The store key of the stock gate's marks-since: since when the store holds every mark."""
    return stock_gate.store_key("gate", "marks-since")


async def hold_every_mark() -> None:
    """The stock gate's store as after a quiet start: it has held every replay mark for a day,
    and no window after a loss is open."""
    await get_store().set(marks_since_key(),
                          repr(time.time() - stock_gate.REPLAY_TTL - 60))
    await get_store().delete(stock_gate.store_key("gate", "unsure"))

"""The mall listing (`rights`): what a resident can redeem now, served from a cache.

Every app opens this list first, and during a flash sale thousands of clients refresh it while
stock falls by the second. So the cache keeps two things apart:

- The page structure (which rights, in which order, with their titles, prices, limits, windows
  and merchant names) changes only when a merchant or operator changes something. Pages are
  cached as JSON in the store under a version number; every change (create, update, restock,
  pause, resume, review, suspend, reinstate) bumps the version after its commit, so the next
  read misses and rebuilds from the database, on every worker at once. Old versions simply
  expire. A page also expires at the next validity boundary (a listed right ending, or any right
  starting), so time alone never makes it wrong, and after PAGE_TTL seconds at the latest.
- Stock is not in the page at all: `stockRemaining` is read live from the flash-sale stock gate
  counters (one MGET per page, see `mall.stock_gate`), which move with every redemption and
  every give-back. So a redemption never invalidates the cache, and a sale of 1,000 items does
  not force 1,000 rebuilds; the list shows sold-out items at 0 the moment the counter reaches 0.

A read costs three store round trips on a hit (version, page, stock) and no database query. If
the store fails, the list is read from the database directly. Without Redis (the in-process
stand-in) each worker keeps its own pages and counters: a change made through one worker
reaches another within PAGE_TTL seconds, and its stock gate only pre-filters (the database
decides), so production runs with Redis.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import orjson
from tortoise.expressions import Q, Subquery

from app.redis import get_store
from mall import stock_gate
from mall.keys import store_key
from mall.models import Merchant, MerchantStatus, Right
from mall.rules import listing_expiry

log = logging.getLogger(__name__)
PAGE_TTL = 30
# The version counter lapses after a quiet day (pages of its old numbers expired long before).
VERSION_TTL = 24 * 3600


@dataclass(frozen=True)
class ListedRight:
    """One right as the mall lists it."""

    id: int
    merchant_id: int
    merchant_name: str
    title: str
    description: str
    category: str
    points_price: int
    per_person_limit: int
    valid_from: datetime
    valid_until: datetime | None
    min_credit_grade: str | None
    stock_remaining: int = 0


@dataclass(frozen=True)
class ListedPage:
    """A page of the listing and whether more follow."""

    rights: list[ListedRight]
    has_next: bool


async def invalidate() -> None:
    """Bump the listing version after a commit that changed what the mall lists."""
    try:
        await get_store().incr(_version_key(), 1, ttl=VERSION_TTL)
    except Exception:  # noqa: BLE001 - pages expire within PAGE_TTL anyway
        log.warning("could not invalidate the mall listing cache")


def _version_key() -> str:
    return store_key("rights", "version")


def _page_key(version: str, first: int, after: int | None, category: str | None) -> str:
    raw = f"{first}|{after}|{category}".encode()
    return store_key("rights", version, hashlib.sha1(raw).hexdigest()[:20])


async def _from_database(
    first: int, after: int | None, category: str | None, now: datetime
) -> tuple[list[ListedRight], bool, datetime]:
    approved = Merchant.filter(status=MerchantStatus.APPROVED.value).values("id")
    query = Right.filter(
        Q(valid_until__isnull=True) | Q(valid_until__gt=now),
        paused=False,
        valid_from__lte=now,
        merchant_id__in=Subquery(approved),
    )
    if category is not None:
        query = query.filter(category=category)
    if after is not None:
        query = query.filter(id__lt=after)
    rows = await query.order_by("-id").limit(first + 1)
    names = dict(
        await Merchant.filter(id__in={r.merchant_id for r in rows}).values_list("id", "name")
    ) if rows else {}
    listed = [
        ListedRight(
            id=r.id,
            merchant_id=r.merchant_id,
            merchant_name=names.get(r.merchant_id, ""),
            title=r.title,
            description=r.description,
            category=r.category,
            points_price=r.points_price,
            per_person_limit=r.per_person_limit,
            valid_from=r.valid_from,
            valid_until=r.valid_until,
            min_credit_grade=r.min_credit_grade,
        )
        for r in rows[:first]
    ]
    upcoming = await Right.filter(paused=False, valid_from__gt=now).order_by("valid_from").first()
    # The extra row too: once it expires, the page may have no next one.
    boundaries = [r.valid_until for r in rows if r.valid_until is not None]
    if upcoming is not None:
        boundaries.append(upcoming.valid_from)
    return listed, len(rows) > first, listing_expiry(now, PAGE_TTL, boundaries)


def _encode(rights: list[ListedRight], has_next: bool, expires: datetime) -> bytes:
    return orjson.dumps(
        {
            "expires": expires.timestamp(),
            "has_next": has_next,
            "rights": [
                [
                    r.id, r.merchant_id, r.merchant_name, r.title, r.description, r.category,
                    r.points_price, r.per_person_limit, r.valid_from.timestamp(),
                    r.valid_until.timestamp() if r.valid_until else None, r.min_credit_grade,
                ]
                for r in rights
            ],
        }
    )


def _decode(raw: bytes, now: datetime) -> tuple[list[ListedRight], bool] | None:
    cached = orjson.loads(raw)
    if cached["expires"] <= now.timestamp():
        return None
    rights = [
        ListedRight(
            id=row[0], merchant_id=row[1], merchant_name=row[2], title=row[3], description=row[4],
            category=row[5], points_price=row[6], per_person_limit=row[7],
            valid_from=datetime.fromtimestamp(row[8], UTC),
            valid_until=datetime.fromtimestamp(row[9], UTC) if row[9] is not None else None,
            min_credit_grade=row[10],
        )
        for row in cached["rights"]
    ]
    return rights, cached["has_next"]


async def _structure(
    first: int, after: int | None, category: str | None, now: datetime
) -> tuple[list[ListedRight], bool]:
    store = get_store()
    try:
        version = (await store.get(_version_key()) or b"0").decode()
        key = _page_key(version, first, after, category)
        raw = await store.get(key)
    except Exception:  # noqa: BLE001 - without the store, read the database
        log.warning("mall listing cache unavailable; reading the database")
        rights, has_next, _ = await _from_database(first, after, category, now)
        return rights, has_next
    if raw is not None:
        hit = _decode(raw, now)
        if hit is not None:
            return hit
    rights, has_next, expires = await _from_database(first, after, category, now)
    ttl = max(1, int((expires - now).total_seconds()) + 1)
    try:
        await store.set(key, _encode(rights, has_next, expires), ttl)
    except Exception:  # noqa: BLE001 - an uncached page is still a right page
        log.warning("could not cache a mall listing page")
    return rights, has_next


async def rights_page(first: int, after: int | None, category: str | None) -> ListedPage:
    """Rights a resident can redeem now, newest first, after the keyset position `after`."""
    now = datetime.now(UTC)
    category = category.strip() if category is not None else None
    rights, has_next = await _structure(first, after, category or None, now)
    try:
        stock = await stock_gate.live_stock([r.id for r in rights])
    except Exception:  # noqa: BLE001 - fall back to the database figures
        stock = dict(await Right.filter(id__in=[r.id for r in rights]).values_list("id", "stock_remaining"))
    return ListedPage(
        rights=[
replace(r, stock_remaining=stock.get(r.id, 0)) for r in rights],
        has_next=has_next,
    )

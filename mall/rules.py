"""Pure rules of the mall: credit codes, voucher codes, right terms, redeemability, masking."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.errors import InvalidInput, InvalidState
from app.instants import representable, too_far

# GB 32100-2015: the 31 characters of a unified social credit code (no I, O, Z, S, V) and the
# weights of positions 1..17; the 18th character is the check character.
CREDIT_CODE_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

# Vouchers use Crockford's base 32 (no I, L, O, U: nothing to mishear or misread): 11 random
# characters (55 bits) and one Luhn mod 32 check character, read aloud as XXXX-XXXX-XXXX.
VOUCHER_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
VOUCHER_RANDOM_CHARS = 11
VOUCHER_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1", "-": None, " ": None})

MAX_POINTS_PRICE = 10**12
MAX_STOCK = 10_000_000
STOCK_LIMIT = 2**31 - 1  # what a right's stock columns hold, over all its restocks
MAX_PER_PERSON_LIMIT = 10_000
MAX_QUANTITY = 1_000
PHONE = re.compile(r"^\+?[0-9][0-9 \-]{4,30}$")


# ---------------------------------------------------------------- unified social credit codes


def normalise_credit_code(code: str) -> str:
    """A credit code as stored: surrounding blanks removed, letters upper case."""
    return code.strip().upper()


def credit_code_check_char(body: str) -> str:
    """The GB 32100-2015 check character of the first 17 characters of a credit code."""
    if len(body) != 17 or any(ch not in CREDIT_CODE_ALPHABET for ch in body):
        raise ValueError("a credit code body is 17 characters of the GB 32100 alphabet")
    total = sum(CREDIT_CODE_ALPHABET.index(ch) * w for ch, w in zip(body, CREDIT_CODE_WEIGHTS, strict=True))
    return CREDIT_CODE_ALPHABET[(31 - total % 31) % 31]


def is_valid_credit_code(code: str) -> bool:
    """True when `code` is 18 characters of the alphabet and its check character matches."""
    if len(code) != 18 or any(ch not in CREDIT_CODE_ALPHABET for ch in code):
        return False
    return credit_code_check_char(code[:17]) == code[17]


# ---------------------------------------------------------------- voucher codes


def _luhn_sum(code: str, double_first: bool) -> int:
    n = len(VOUCHER_ALPHABET)
    total = 0
    factor = 2 if double_first else 1
    for ch in reversed(code):
        addend = factor * VOUCHER_ALPHABET.index(ch)
        total += addend // n + addend % n
        factor = 1 if factor == 2 else 2
    return total


def voucher_check_char(body: str) -> str:
    """The Luhn mod 32 check character of a voucher body (catches one wrong or swapped character)."""
    n = len(VOUCHER_ALPHABET)
    return VOUCHER_ALPHABET[(n - _luhn_sum(body, double_first=True) % n) % n]


def new_voucher_code() -> str:
    """A fresh voucher code (12 characters, the last a check character), from the OS random source."""
    body = "".join(secrets.choice(VOUCHER_ALPHABET) for _ in range(VOUCHER_RANDOM_CHARS))
    return body + voucher_check_char(body)


def format_voucher(code: str) -> str:
    """A stored voucher code as it is shown and read aloud: XXXX-XXXX-XXXX."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def parse_voucher(text: str) -> str | None:
    """The stored form of a typed voucher code, or None when it is malformed or its check fails."""
    code = text.strip().upper().translate(VOUCHER_ALIASES)
    if len(code) != VOUCHER_RANDOM_CHARS + 1 or any(ch not in VOUCHER_ALPHABET for ch in code):
        return None
    if _luhn_sum(code, double_first=False) % len(VOUCHER_ALPHABET) != 0:
        return None
    return code


# ---------------------------------------------------------------- merchants


def check_merchant_application(
    name: str, credit_code: str, contact: str, token_org: str
) -> tuple[str, str, str]:
    """Validate an application; return (name, credit code, contact) as stored."""
    name = name.strip()
    if not 0 < len(name) <= 200:
        raise InvalidInput("name must be 1 to 200 characters.", "name")
    code = normalise_credit_code(credit_code)
    if not is_valid_credit_code(code):
        raise InvalidInput(
            "creditCode is not a valid unified social credit code (GB 32100-2015 check failed).",
            "creditCode",
        )
    if code != normalise_credit_code(token_org):
        raise InvalidInput("creditCode must be the code of the organisation you act for.", "creditCode")
    contact = contact.strip()
    if not PHONE.match(contact) or len(contact) > 32:
        raise InvalidInput("contact must be a phone number.", "contact")
    return name, code, contact


def mask_phone(contact: str) -> str:
    """A phone number with its middle hidden: 138****5678."""
    digits = contact.replace(" ", "").replace("-", "")
    if len(digits) <= 4:
        return "*" * len(digits)
    keep_head = 3 if len(digits) >= 11 else 1
    return digits[:keep_head] + "*" * (len(digits) - keep_head - 4) + digits[-4:]


# ---------------------------------------------------------------- rights


@dataclass(frozen=True)
class RightTerms:
    """Validated terms of a right."""

    title: str
    description: str
    category: str
    points_price: int
    stock: int
    per_person_limit: int
    valid_from: datetime
    valid_until: datetime | None
    min_credit_grade: str | None


def check_price(points_price: int) -> int:
    """A points price: a whole number above zero."""
    if not 0 < points_price <= MAX_POINTS_PRICE:
        raise InvalidInput(f"pointsPrice must be between 1 and {MAX_POINTS_PRICE}.", "pointsPrice")
    return points_price


def check_window(valid_from: datetime, valid_until: datetime | None, now: datetime) -> None:
    """A validity window: from before until, and until still ahead."""
    if valid_from.tzinfo is None or (valid_until is not None and valid_until.tzinfo is None):
        raise InvalidInput("validFrom and validUntil need a time zone offset.", "validFrom")
    for name, moment in (("validFrom", valid_from), ("validUntil", valid_until)):
        if moment is not None and not representable(moment, shanghai_day=False):
            raise InvalidInput(too_far(name), name)
    if valid_until is not None:
        if valid_until <= valid_from:
            raise InvalidInput("validUntil must be after validFrom.", "validUntil")
        if valid_until <= now:
            raise InvalidInput("validUntil must be in the future.", "validUntil")


def check_restock(quantity: int) -> int:
    """Stock to add: a whole number above zero."""
    if not 0 < quantity <= MAX_STOCK:
        raise InvalidInput(f"quantity must be between 1 and {MAX_STOCK}.", "quantity")
    return quantity


def check_right_terms(
    *,
    title: str,
    description: str | None,
    category: str,
    points_price: int,
    stock: int,
    per_person_limit: int | None,
    valid_from: datetime | None,
    valid_until: datetime | None,
    min_credit_grade: str | None,
    grades: tuple[str, ...],
    now: datetime,
) -> RightTerms:
    """Validate the terms of a new right, naming the field at fault."""
    title = title.strip()
    if not 0 < len(title) <= 100:
        raise InvalidInput("title must be 1 to 100 characters.", "title")
    description = (description or "").strip()
    if len(description) > 2000:
        raise InvalidInput("description must be at most 2000 characters.", "description")
    category = category.strip()
    if not 0 < len(category) <= 32:
        raise InvalidInput("category must be 1 to 32 characters.", "category")
    check_price(points_price)
    if not 0 <= stock <= MAX_STOCK:
        raise InvalidInput(f"stock must be between 0 and {MAX_STOCK}.", "stock")
    limit = 1 if per_person_limit is None else per_person_limit
    if not 1 <= limit <= MAX_PER_PERSON_LIMIT:
        raise InvalidInput(f"perPersonLimit must be between 1 and {MAX_PER_PERSON_LIMIT}.", "perPersonLimit")
    start = valid_from or now
    check_window(start, valid_until, now)
    grade = min_credit_grade.strip().upper() if min_credit_grade else None
    if grade is not None and grade not in grades:
        raise InvalidInput(f"minCreditGrade must be one of {', '.join(grades)}.", "minCreditGrade")
    return RightTerms(title, description, category, points_price, stock, limit, start, valid_until, grade)


def check_quantity(quantity: int) -> int:
    """How many to redeem at once: 1 to MAX_QUANTITY."""
    if not 0 < quantity <= MAX_QUANTITY:
        raise InvalidInput(f"quantity must be between 1 and {MAX_QUANTITY}.", "quantity")
    return quantity


def check_redeemable(
    merchant_status: str, paused: bool, valid_from: datetime, valid_until: datetime | None, now: datetime
) -> None:
    """Refuse unless the right is on sale now: approved merchant, not paused, within validity."""
    if merchant_status != "APPROVED":
        raise InvalidState("This right is not offered in the mall now.", "rightId")
    if paused:
        raise InvalidState("This right is paused by its merchant.", "rightId")
    if now < valid_from:
        raise InvalidState("This right is not valid yet.", "rightId")
    if valid_until is not None and now >= valid_until:
        raise InvalidState("This right is no longer valid.", "rightId")


def listing_expiry(now: datetime, ttl_seconds: float, boundaries: list[datetime]) -> datetime:
    """When a cached listing stops being right: after the TTL or at the next validity boundary."""
    limit = now + timedelta(seconds=ttl_seconds)
    future = [b for b in boundaries if b > now]
    return min([limit, *future])

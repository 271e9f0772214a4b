"""Custom scalars: BigInt, a 64-bit integer carried as a string of decimal digits."""

from __future__ import annotations

import re
from typing import NewType

import strawberry

from app.units import BIGINT_MAX

BIGINT_MIN = -BIGINT_MAX - 1
# ASCII digits only (\d and str.isdigit also take other scripts' digits); 19 digits hold 2**63.
_DIGITS = re.compile(r"-?[0-9]{1,19}")
# One message for every refusal: it never quotes the value, which may be huge.
_NOT_A_BIGINT = "BigInt must be a whole number of 64 bits, written as decimal digits."


def _parse_bigint(value: object) -> int:
    """A BigInt from a variable or literal: a 64-bit whole number, as a number or ASCII digits."""
    if isinstance(value, str):
        value = int(value) if _DIGITS.fullmatch(value) else None
    elif isinstance(value, float):
        value = int(value) if value.is_integer() else None
    if not isinstance(value, int) or isinstance(value, bool) or not BIGINT_MIN <= value <= BIGINT_MAX:
        raise ValueError(_NOT_A_BIGINT)
    return value


BigInt = NewType("BigInt", int)

BIGINT_DEFINITION = strawberry.scalar(
    name="BigInt",
    serialize=lambda v: str(int(v)),
    parse_value=_parse_bigint,
    description="A 64-bit integer as a string of decimal digits (grams of CO2e, points).",
)
SCALAR_MAP = {BigInt: BIGINT_DEFINITION}

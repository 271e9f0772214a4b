"""Custom scalars: BigInt, a 64-bit integer carried as a string of decimal digits."""

from __future__ import annotations

from typing import NewType

import strawberry

from app.units import BIGINT_MAX


def _parse_bigint(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("BigInt must be an integer, not a boolean.")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value.strip())
    else:
        raise ValueError("BigInt must be a whole number, as digits or a number.")
    if not -BIGINT_MAX - 1 <= number <= BIGINT_MAX:
        raise ValueError("BigInt is outside the 64-bit range.")
    return number


BigInt = NewType("BigInt", int)

BIGINT_DEFINITION = strawberry.scalar(
    name="BigInt",
    serialize=lambda v: str(int(v)),
    parse_value=_parse_bigint,
    description="A 64-bit integer as a string of decimal digits (grams of CO2e, points).",
)
SCALAR_MAP = {BigInt: BIGINT_DEFINITION}

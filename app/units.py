"""Integer units of the ledger and rate arithmetic with the rounding direction named."""

from __future__ import annotations

from typing import NewType

Grams = NewType("Grams", int)
Points = NewType("Points", int)

BIGINT_MAX = 2**63 - 1


def floor_div(amount: int, divisor: int) -> int:
    """Whole units of `divisor` in `amount`, rounding toward zero for non-negative amounts."""
    if divisor <= 0:
        raise ValueError("divisor must be positive")
    return amount // divisor


def grams_to_points(grams: int, grams_per_point: int) -> tuple[Points, Grams]:
    """Points bought by `grams` (rounded down, in the reserve's favour) and the grams they take."""
    points = floor_div(grams, grams_per_point)
    return Points(points), Grams(points * grams_per_point)

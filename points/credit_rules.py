"""The credit standing (碳普惠信用, Art. 24, 25) as a pure function of a participant's history.

score = 400 (base)
      + reductions earned     min(200, earned grams // 5,000)      1 per 5 kg, full at 1 t
      + points earned         min(100, points earned // 50)        conversions and grants
      + points spent          min( 50, points spent // 100)        redemptions net of refunds
      + experience            min(150, lifetime experience // 20)
      + time active           min(100, days active // 7)           about two years to full
      - fraudulent records    250 per active FRAUDULENT_RECORDS flag
      - other misconduct      120 per other active flag
      - voucher cancellations 25 per cancellation beyond 3 in the last 30 days, at most 200
clamped to 0..1000. The grade is the highest step whose floor the score reaches:
C < B (400) < A (550) < AA (700) < AAA (850). A new resident starts at 400, grade B.

"Days active" counts whole days from the account opening to the moment the standing was
computed, which is the latest change that refreshed it. Every factor is shown with its
contribution so a resident can see why.
"""

from __future__ import annotations

from dataclasses import dataclass

GRADES: tuple[str, ...] = ("C", "B", "A", "AA", "AAA")
GRADE_FLOORS: tuple[int, ...] = (0, 400, 550, 700, 850)
BASE = 400
MAX_SCORE = 1000
FREE_CANCELLATIONS = 3
CANCELLATION_WINDOW_DAYS = 30


@dataclass(frozen=True)
class CreditInputs:
    """What the standing depends on, read from the ledger, experience, flags and vouchers."""

    reductions_earned_grams: int = 0
    points_earned: int = 0
    points_spent: int = 0
    experience: int = 0
    days_active: int = 0
    fraud_flags: int = 0
    other_flags: int = 0
    recent_cancellations: int = 0


@dataclass(frozen=True)
class CreditResult:
    """A score 0..1000, its grade and each factor with its signed contribution."""

    score: int
    grade: str
    factors: tuple[tuple[str, int], ...]


def grade_for(score: int) -> str:
    """The grade of a score: the highest step whose floor it reaches."""
    grade = GRADES[0]
    for name, floor in zip(GRADES, GRADE_FLOORS, strict=True):
        if score >= floor:
            grade = name
    return grade


def grade_rank(grade: str) -> int:
    """The position of a grade on the scale, low to high; ValueError for an unknown grade."""
    return GRADES.index(grade)


def cancellation_penalty(recent_cancellations: int) -> int:
    """The voucher_cancellations factor for the cancellations of the last 30 days."""
    return -min(200, 25 * max(0, recent_cancellations - FREE_CANCELLATIONS))


def compute_credit(inputs: CreditInputs) -> CreditResult:
    """The credit standing for a participant's history (see the module docstring)."""
    factors = (
        ("base", BASE),
        ("reductions_earned", min(200, max(0, inputs.reductions_earned_grams) // 5_000)),
        ("points_earned", min(100, max(0, inputs.points_earned) // 50)),
        ("points_spent", min(50, max(0, inputs.points_spent) // 100)),
        ("experience", min(150, max(0, inputs.experience) // 20)),
        ("days_active", min(100, max(0, inputs.days_active) // 7)),
        ("fraudulent_records", -250 * max(0, inputs.fraud_flags)),
        ("other_misconduct", -120 * max(0, inputs.other_flags)),
        ("voucher_cancellations", cancellation_penalty(inputs.recent_cancellations)),
    )
    score = max(0, min(MAX_SCORE, sum(value for _, value in factors)))
    return CreditResult(score=score, grade=grade_for(score), factors=factors)

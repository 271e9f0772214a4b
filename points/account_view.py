"""A carbon account in one query: balances, experience, the level table and the credit row."""

from __future__ import annotations

from dataclasses import dataclass

from app.sql import fetch
from points.credit import Standing, cancellation_cutoff, current_stored
from points.growth import Growth, growth_of
from points.rules import Level

_ACCOUNT_SQL = """
SELECT pt.display_name AS display_name,
       COALESCE(g.balance, 0) AS grams_balance, COALESCE(g.pending, 0) AS grams_pending,
       COALESCE(p.balance, 0) AS points_balance, COALESCE(p.pending, 0) AS points_pending,
       COALESCE(x.total, 0) AS experience,
       c.score AS score, c.grade AS grade, c.factors AS factors, c.updated_at AS updated_at,
       c.grams_mark AS grams_mark, c.points_mark AS points_mark,
       c.experience_mark AS experience_mark,
       v.recent AS recent_cancellations,
       l.code AS level_code, l.name AS level_name, l.min_experience AS level_min
FROM participant pt
LEFT JOIN ledger_account g ON g.participant_id = pt.id AND g.asset = 'REDUCTION_GRAMS'
LEFT JOIN ledger_account p ON p.participant_id = pt.id AND p.asset = 'POINTS'
LEFT JOIN points_experience x ON x.participant_id = pt.id
LEFT JOIN points_credit_standing c ON c.participant_id = pt.id
LEFT JOIN (SELECT COUNT(*) AS recent FROM points_voucher_cancellation
           WHERE participant_id = $1 AND created_at >= $2) v ON 1 = 1
LEFT JOIN points_growth_level l ON 1 = 1
WHERE pt.id = $1
ORDER BY l.min_experience
"""


@dataclass(frozen=True)
class AccountView:
    """What a carbon account shows: available grams and points, growth, credit standing."""

    participant_id: int
    reduction_grams: int
    points: int
    growth: Growth
    credit_row: dict
    display_name: str = ""

    def stored_credit(self) -> Standing | None:
        """The stored credit standing when it is current, else None (no database work)."""
        return current_stored(self.credit_row)


async def account_view(participant_id: int) -> AccountView:
    """The account of a participant, read in one statement."""
    rows = await fetch(_ACCOUNT_SQL, [participant_id, cancellation_cutoff()])
    if not rows:
        return AccountView(participant_id, 0, 0, growth_of(0, []), {})
    first = rows[0]
    table = [
        Level(r["level_code"], r["level_name"], int(r["level_min"]))
        for r in rows
        if r["level_code"] is not None
    ]
    return AccountView(
        participant_id=participant_id,
        reduction_grams=int(first["grams_balance"]) - int(first["grams_pending"]),
        points=int(first["points_balance"]) - int(first["points_pending"]),
        growth=growth_of(int(first["experience"]), table),
        credit_row=first,
        display_name=first["display_name"],
    )

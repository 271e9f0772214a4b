"""Re-adding the ledger: stored balances, double entry, lots, and the conservation totals."""

from __future__ import annotations

from dataclasses import dataclass, field

from tortoise import connections

from app.ledger.accounts import SystemAccount


@dataclass
class Totals:
    """The conservation view: where every issued gram and point is now."""

    issued_grams: int = 0
    held_grams: int = 0
    reserve_grams: int = 0
    retired_grams: int = 0
    points_issued: int = 0
    points_held: int = 0
    points_pooled: int = 0
    points_bought_back: int = 0


@dataclass
class Report:
    """What `puhui ledger verify` found."""

    totals: Totals
    accounts: int = 0
    transfers: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing disagrees."""
        return not self.problems


async def _rows(sql: str) -> list[dict]:
    return await connections.get("default").execute_query_dict(sql)


async def system_totals() -> Totals:
    """Issued, held, reserve and retired grams; issued, held, pooled and bought-back points."""
    rows = await _rows(
        """
        SELECT a.asset AS asset, a.kind AS kind, a.code AS code, p.kind AS holder,
               SUM(a.balance) AS total
        FROM ledger_account a LEFT JOIN participant p ON p.id = a.participant_id
        GROUP BY a.asset, a.kind, a.code, p.kind
        """
    )
    t = Totals()
    for r in rows:
        total = int(r["total"] or 0)
        if r["asset"] == "REDUCTION_GRAMS":
            if r["code"] == SystemAccount.GRAMS_ISSUANCE:
                t.issued_grams -= total
            elif r["code"] == SystemAccount.CONVERSION_RESERVE:
                t.reserve_grams += total
            elif r["code"] == SystemAccount.GRAMS_RETIRED:
                t.retired_grams += total
            else:
                t.held_grams += total
        elif r["code"] == SystemAccount.POINTS_ISSUANCE:
            t.points_issued -= total
        elif r["code"] == SystemAccount.POINTS_BOUGHT_BACK:
            t.points_bought_back += total
        elif r["holder"] == "individual":
            t.points_held += total
        else:
            t.points_pooled += total
    return t


async def verify() -> Report:
    """Re-add every transfer and lot and compare with stored balances and the totals."""
    totals = await system_totals()
    report = Report(totals=totals)
    problems = report.problems

    counts = await _rows(
        "SELECT (SELECT COUNT(*) FROM ledger_account) AS accounts,"
        " (SELECT COUNT(*) FROM ledger_transfer) AS transfers"
    )
    report.accounts = int(counts[0]["accounts"])
    report.transfers = int(counts[0]["transfers"])

    for r in await _rows(
        """
        SELECT a.id AS id, a.balance AS balance, COALESCE(e.total, 0) AS entries
        FROM ledger_account a
        LEFT JOIN (SELECT account_id, SUM(amount) AS total FROM ledger_entry GROUP BY account_id) e
          ON e.account_id = a.id
        WHERE a.balance <> COALESCE(e.total, 0)
        """
    ):
        problems.append(
            f"account {r['id']}: stored balance {r['balance']} but entries add to {r['entries']}"
        )

    for r in await _rows(
        """
        SELECT t.id AS id FROM ledger_transfer t
        LEFT JOIN ledger_entry d ON d.transfer_id = t.id AND d.account_id = t.debit_account_id
             AND d.amount = -t.amount
        LEFT JOIN ledger_entry c ON c.transfer_id = t.id AND c.account_id = t.credit_account_id
             AND c.amount = t.amount
        WHERE d.id IS NULL OR c.id IS NULL OR t.amount <= 0
        """
    ):
        problems.append(f"transfer {r['id']}: its two entries do not match it")

    for r in await _rows(
        "SELECT asset, SUM(balance) AS total FROM ledger_account GROUP BY asset"
        " HAVING SUM(balance) <> 0"
    ):
        problems.append(f"{r['asset']}: balances add to {r['total']}, not 0")

    for r in await _rows(
        "SELECT id, balance, pending FROM ledger_account"
        " WHERE kind <> 'issuance' AND (balance < 0 OR pending < 0 OR pending > balance)"
    ):
        problems.append(f"account {r['id']}: negative balance {r['balance']}/{r['pending']}")

    for r in await _rows(
        """
        SELECT a.id AS id, a.balance AS balance, COALESCE(h.total, 0) AS lots
        FROM ledger_account a
        LEFT JOIN (SELECT account_id, SUM(balance) AS total FROM ledger_lot_holding
                   GROUP BY account_id) h ON h.account_id = a.id
        WHERE a.asset = 'REDUCTION_GRAMS' AND a.kind <> 'issuance'
          AND a.balance <> COALESCE(h.total, 0)
        """
    ):
        problems.append(f"account {r['id']}: balance {r['balance']} but lots hold {r['lots']}")

    for r in await _rows(
        """
        SELECT l.id AS id, l.issued_grams AS issued, COALESCE(h.total, 0) AS held
        FROM ledger_lot l
        LEFT JOIN (SELECT lot_id, SUM(balance) AS total FROM ledger_lot_holding GROUP BY lot_id) h
          ON h.lot_id = l.id
        WHERE l.issued_grams <> COALESCE(h.total, 0)
        """
    ):
        problems.append(f"lot {r['id']}: issued {r['issued']} g but holdings add to {r['held']} g")

    lots_issued = await _rows("SELECT COALESCE(SUM(issued_grams), 0) AS total FROM ledger_lot")
    if int(lots_issued[0]["total"]) != totals.issued_grams:
        problems.append(
            f"lots record {lots_issued[0]['total']} g issued but the issuance account "
            f"shows {totals.issued_grams} g"
        )

    t = totals
    if t.issued_grams != t.held_grams + t.reserve_grams + t.retired_grams:
        problems.append(
            f"issued {t.issued_grams} g != held {t.held_grams} + reserve {t.reserve_grams}"
            f" + retired {t.retired_grams}"
        )
    if t.points_issued != t.points_held + t.points_pooled + t.points_bought_back:
        problems.append(
            f"points issued {t.points_issued} != held {t.points_held} + pooled"
            f" {t.points_pooled} + bought back {t.points_bought_back}"
        )
    return report

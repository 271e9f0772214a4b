"""`puhui demo`: the four green-travel scenarios published, reductions issued, idempotent."""

from __future__ import annotations

from app.auth import decode_token
from app.demo import SCENARIOS, load_demo
from app.ledger.accounts import balances
from app.ledger.models import Asset, Transfer
from registry.models import Issuance, Methodology, Scenario
from tests.helpers import find_resident


async def test_demo_loads_once_and_prints_tokens(database):
    first = await load_demo()
    codes = [s.code for s in SCENARIOS]
    rows = {s.code: s for s in await Scenario.filter(code__in=codes)}
    assert sorted(rows) == sorted(codes)
    assert {s.status for s in rows.values()} == {"PUBLISHED"}
    factors = {m.code: (m.activity_unit, m.grams_per_unit, m.status)
               for m in await Methodology.filter(code__in=[f"{c}-M" for c in codes])}
    assert factors["DEMO-METRO-M"] == ("10 passenger-km", 468, "PUBLISHED")
    assert factors["DEMO-EV-M"] == ("km", 7, "PUBLISHED")
    issuances = await Issuance.filter(scenario_id__in=[s.id for s in rows.values()]).count()
    assert issuances == 4
    resident = await find_resident("demo-resident-1")
    grams, _pending = (await balances(resident))[Asset.REDUCTION_GRAMS]
    assert grams > 0

    transfers = await Transfer.all().count()
    second = await load_demo()
    assert second[0] == "demo data already loaded; nothing new"
    assert await Transfer.all().count() == transfers
    assert await Issuance.filter(scenario_id__in=[s.id for s in rows.values()]).count() == 4

    for lines in (first, second):
        tokens = {line.split(" token: ")[0]: line.split(" token: ")[1]
                  for line in lines if " token: " in line}
        assert decode_token(tokens["resident"]).subject == "demo-resident-1"
        assert decode_token(tokens["operations (center)"]).roles == frozenset({"center"})
        assert decode_token(tokens["regulator"]).roles == frozenset({"regulator"})
        operator = decode_token(tokens["scenario operator of DEMO-METRO"])
        assert operator.org == rows["DEMO-METRO"].operator_org
        assert decode_token(tokens["merchant (applyMerchant first)"]).org

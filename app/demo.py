"""Demo data for `puhui demo` (run by `make run`): Shanghai's four green-travel scenarios.

Each scenario goes the whole approval path through the services (submit, assess, publish), a
few residents who opted in a month ago travel over the last two weeks, and the center issues
their reductions. Loading is idempotent: a second run loads nothing again and only prints the
tokens. Every demo code starts with DEMO- so it never collides with test codes.

Factors are illustrative, from methodologies published elsewhere: metro 46.8 and e-bus 26.9 g
CO2e per passenger-km (Shenzhen), shared bike 93.3 g per km and battery electric car 7 g per km
(Wuhan). The registry stores whole grams per unit, so the first three are stated per 10 km
(468, 269 and 933 g): exact, with no rounding of the published factor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from app.auth import Principal, issue_token
from app.calendar import SHANGHAI, fill_unknown_years, shanghai_today
from app.errors import DomainError
from app.events import flush_notices
from app.participants import resident_id
from mall.rules import credit_code_check_char
from registry import methodologies, scenarios
from registry.issuance import issue_scenario_reductions
from registry.models import (
    Issuance,
    Methodology,
    MethodologyStatus,
    Scenario,
    ScenarioAssessment,
    ScenarioAuthorization,
    ScenarioStatus,
)
from registry.records import RecordInput, submit_scenario_records

log = logging.getLogger(__name__)

CENTER = Principal("demo-center", frozenset({"center"}), name="Demo operations center")
EXCHANGE = Principal("demo-exchange", frozenset({"exchange"}), name="Demo exchange")
REGULATOR = Principal("demo-regulator", frozenset({"regulator"}), name="Demo regulator")
PUBLICITY_DAYS_AGO = 30
CONSENT_DAYS_AGO = 28
TRAVEL_DAYS = 14


def demo_credit_code(serial: int) -> str:
    """A valid unified social credit code for demo organisation `serial` (GB 32100 check)."""
    body = f"91310000MA1DEM0{serial:02d}"
    return body + credit_code_check_char(body)


@dataclass(frozen=True)
class DemoScenario:
    """One green-travel scenario with its methodology, operator and a typical trip."""

    code: str
    name: str
    methodology_name: str
    activity_unit: str
    grams_per_unit: int
    daily_cap_grams: int
    operator_serial: int
    trip_quantity: float


SCENARIOS = (
    DemoScenario("DEMO-METRO", "地铁绿色出行 Metro trips",
                 "Urban rail transit trips: 46.8 g CO2e per passenger-km, stated per 10 passenger-km",
                 "10 passenger-km", 468, 2_000, 1, 1.24),
    DemoScenario("DEMO-EBUS", "电动公交出行 Electric bus trips",
                 "Electric bus trips: 26.9 g CO2e per passenger-km, stated per 10 passenger-km",
                 "10 passenger-km", 269, 1_500, 2, 0.63),
    DemoScenario("DEMO-BIKE", "共享单车骑行 Shared bike rides",
                 "Shared bicycle rides: 93.3 g CO2e per km, stated per 10 km",
                 "10 km", 933, 1_000, 3, 0.28),
    DemoScenario("DEMO-EV", "纯电动汽车出行 Battery electric car trips",
                 "Battery electric passenger car trips: 7 g CO2e per km",
                 "km", 7, 500, 4, 23.5),
)
RESIDENTS = (
    ("demo-resident-1", "演示居民 甲", ("DEMO-METRO", "DEMO-BIKE")),
    ("demo-resident-2", "演示居民 乙", ("DEMO-EBUS", "DEMO-METRO")),
    ("demo-resident-3", "演示居民 丙", ("DEMO-EV",)),
)
MERCHANT_SERIAL = 5


def operator(spec: DemoScenario) -> Principal:
    """The operator organisation of a demo scenario."""
    return Principal(f"demo-operator-{spec.code.lower()}", frozenset({"scenario_operator"}),
                     org=demo_credit_code(spec.operator_serial))


async def _methodology(spec: DemoScenario, loaded: list[str]) -> Methodology:
    code = f"{spec.code}-M"
    row = await Methodology.filter(code=code, version="1.0").first()
    if row is None:
        row = await methodologies.submit_methodology(
            operator(spec), code=code, name=spec.methodology_name, kind="SCENARIO",
            methodology_class="II", version="1.0", activity_unit=spec.activity_unit,
            grams_per_unit=spec.grams_per_unit, daily_cap_grams=spec.daily_cap_grams)
        loaded.append(f"methodology {code}")
    if row.status == MethodologyStatus.SUBMITTED:
        row = await methodologies.assess_methodology(CENTER, row.id, True, "demo")
    if row.status == MethodologyStatus.PUBLIC_COMMENT:
        row = await methodologies.publish_methodology(REGULATOR, row.id)
    return row


async def _calendar(loaded: list[str]) -> None:
    """A placeholder for a year of the demo's publicity period that no calendar knows yet."""
    today = shanghai_today()
    years = (today - timedelta(days=PUBLICITY_DAYS_AGO)).year, today.year
    for year in await fill_unknown_years(years, "demo placeholder, not the official calendar"):
        loaded.append(f"placeholder holiday calendar {year} (weekends only: load the official one"
                      " with `puhui calendar load`)")


async def _scenario(spec: DemoScenario, methodology: Methodology, loaded: list[str]) -> Scenario:
    row = await Scenario.filter(code=spec.code).first()
    if row is None:
        row = await scenarios.submit_scenario(
            operator(spec), methodology_id=methodology.id, code=spec.code, name=spec.name,
            no_double_counting_commitment=True)
        loaded.append(f"scenario {spec.code}")
    if row.status == ScenarioStatus.SUBMITTED:
        done = set(await ScenarioAssessment.filter(scenario_id=row.id).values_list("body", flat=True))
        started = shanghai_today() - timedelta(days=PUBLICITY_DAYS_AGO)
        for principal, body in ((CENTER, "center"), (EXCHANGE, "exchange")):
            if body not in done:
                row = await scenarios.assess_scenario(principal, row.id, True, "demo", started)
    if row.status == ScenarioStatus.PUBLICITY:
        row = await scenarios.publish_scenario(REGULATOR, row.id)
    return row


async def _residents(now: datetime, loaded: list[str]) -> dict[str, list[str]]:
    """Residents and the scenarios they opted in to a month ago (seeded consent history)."""
    travellers: dict[str, list[str]] = {}
    for subject, name, codes in RESIDENTS:
        pid = await resident_id(Principal(subject, frozenset({"resident"}), name=name))
        for code in codes:
            exists = await ScenarioAuthorization.filter(participant_id=pid, scenario_code=code).exists()
            if not exists:
                await ScenarioAuthorization.create(
                    participant_id=pid, scenario_code=code,
                    granted_at=now - timedelta(days=CONSENT_DAYS_AGO))
                loaded.append(f"consent {subject} {code}")
            travellers.setdefault(code, []).append(subject)
    return travellers


async def _travel_and_issue(spec: DemoScenario, subjects: list[str], now: datetime,
                            loaded: list[str]) -> None:
    scenario = await Scenario.get(code=spec.code)
    if await Issuance.filter(scenario_id=scenario.id).exists():
        return
    today = shanghai_today(now)
    records = [
        RecordInput(
            subject=subject,
            quantity=round(spec.trip_quantity * (1 + 0.1 * (trip % 3)), 2),
            occurred_at=datetime.combine(today - timedelta(days=day), time(8 + 10 * trip, 15),
                                         SHANGHAI),
            external_ref=f"{spec.code}-{subject}-{day:02d}-{trip}",
        )
        for subject in subjects
        for day in range(1, TRAVEL_DAYS + 1)
        for trip in (0, 1)
    ]
    outcome = await submit_scenario_records(operator(spec), spec.code, records)
    if outcome.rejected:
        log.warning("demo %s: %d records rejected, first: %s", spec.code, len(outcome.rejected),
                    outcome.rejected[0])
    period_end = datetime.combine(today, time(0), SHANGHAI).astimezone(UTC)
    issued = await issue_scenario_reductions(CENTER, spec.code, period_end, f"demo-{spec.code}")
    loaded.append(f"issuance {issued.issuance.serial_prefix}: {issued.issuance.total_grams} g "
                  f"to {issued.issuance.recipients} residents")


async def load_demo() -> list[str]:
    """Load the demo once; return lines to print (what was loaded, then tokens to try the API)."""
    people = tokens()  # first: where development tokens are refused, nothing is loaded
    now = datetime.now(UTC)
    loaded: list[str] = []
    try:
        await _calendar(loaded)
        for spec in SCENARIOS:
            await _scenario(spec, await _methodology(spec, loaded), loaded)
        travellers = await _residents(now, loaded)
        for spec in SCENARIOS:
            await _travel_and_issue(spec, travellers.get(spec.code, []), now, loaded)
    except DomainError as exc:
        # e.g. no holiday calendar for this year yet: say so, and still print the tokens
        return [f"demo data not (fully) loaded: {exc.message}"] + people
    finally:
        await flush_notices()
    head = ["demo data loaded: " + "; ".join(loaded)] if loaded else [
        "demo data already loaded; nothing new"]
    return head + people


def tokens() -> list[str]:
    """Development tokens for the demo's people and organisations."""
    metro = SCENARIOS[0]
    people = [
        ("resident", RESIDENTS[0][0], ["resident"], None),
        ("operations (center)", CENTER.subject, ["center"], None),
        ("exchange", EXCHANGE.subject, ["exchange"], None),
        ("regulator", REGULATOR.subject, ["regulator"], None),
        (f"scenario operator of {metro.code}", operator(metro).subject, ["scenario_operator"],
         operator(metro).org),
        ("merchant (applyMerchant first)", "demo-merchant", ["merchant"],
         demo_credit_code(MERCHANT_SERIAL)),
    ]
    return [f"{label} token: {issue_token(sub, roles, org=org)}" for label, sub, roles, org in people]

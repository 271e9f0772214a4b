"""Taking methodologies and scenarios through the approval path in tests, via the contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from app.calendar import fill_unknown_years, shanghai_today
from tests.helpers import credit_code, data, op, token, unique

CENTER = token("center-assessor", "center")
EXCHANGE = token("exchange-assessor", "exchange")
REGULATOR = token("regulator-officer", "regulator")


async def ensure_test_calendar() -> None:
    """Make the days around today computable in a year chinese_calendar does not know.

    A test-only placeholder (weekends off, no holidays) is stored for such a year, so the
    suite keeps working after 2026; a year already loaded is left alone.
    """
    today = shanghai_today()
    around = (today - timedelta(days=100), today, today + timedelta(days=40))
    await fill_unknown_years((d.year for d in around), "test-placeholder")


@dataclass
class Published:
    """A published scenario methodology and scenario, with the operator that runs it."""

    methodology_id: str
    methodology_code: str
    scenario_id: str
    scenario_code: str
    operator_org: str
    operator: str  # the operator's token


async def submit_methodology(
    client: httpx.AsyncClient, auth: str, **overrides: Any
) -> dict[str, Any]:
    """SubmitMethodology with a valid scenario methodology, changed by `overrides`."""
    values = {
        "code": unique("M-"),
        "name": "Test metro trips",
        "kind": "SCENARIO",
        "methodologyClass": "II",
        "version": "1.0",
        "activityUnit": "passenger-km",
        "gramsPerUnit": "47",
        "dailyCapGrams": "5000",
    }
    values.update(overrides)
    return await op(client, "SubmitMethodology", {"input": values}, auth)


async def published_methodology(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    """A scenario methodology taken through submit, assess and publish; its id and code."""
    submitter = token(roles="scenario_operator", org=credit_code())
    made = data(await submit_methodology(client, submitter, **overrides))["submitMethodology"]
    assert not made["userErrors"], made["userErrors"]
    methodology = made["methodology"]
    review = {"input": {"id": methodology["id"], "approve": True}}
    assessed = data(await op(client, "AssessMethodology", review, CENTER))["assessMethodology"]
    assert not assessed["userErrors"], assessed["userErrors"]
    published = data(await op(client, "PublishMethodology", {"input": {"id": methodology["id"]}},
                              REGULATOR))["publishMethodology"]
    assert not published["userErrors"], published["userErrors"]
    return methodology


async def submitted_scenario(
    client: httpx.AsyncClient, methodology_id: str, operator: str, **overrides: Any
) -> dict[str, Any]:
    """SubmitScenario answer data for a fresh code."""
    values = {
        "methodologyId": methodology_id,
        "code": unique("S-"),
        "name": "Test scenario",
        "noDoubleCountingCommitment": True,
    }
    values.update(overrides)
    return data(await op(client, "SubmitScenario", {"input": values}, operator))["submitScenario"]


async def published_scenario(
    client: httpx.AsyncClient, operator_org: str | None = None, **methodology: Any
) -> Published:
    """A scenario through both assessments, a publicity already posted 30 days ago, and publish."""
    await ensure_test_calendar()
    found = await published_methodology(client, **methodology)
    org = operator_org or credit_code()
    operator = token(unique("op"), "scenario_operator", org=org)
    made = await submitted_scenario(client, found["id"], operator)
    assert not made["userErrors"], made["userErrors"]
    scenario = made["scenario"]
    start = (shanghai_today() - timedelta(days=30)).isoformat()
    for auth, extra in ((CENTER, {}), (EXCHANGE, {"publicityStartsOn": start})):
        body = {"input": {"id": scenario["id"], "approve": True, **extra}}
        assessed = data(await op(client, "AssessScenario", body, auth))["assessScenario"]
        assert not assessed["userErrors"], assessed["userErrors"]
    done = data(await op(client, "PublishScenario", {"input": {"id": scenario["id"]}},
                         REGULATOR))["publishScenario"]
    assert not done["userErrors"], done["userErrors"]
    assert done["scenario"]["status"] == "PUBLISHED"
    return Published(found["id"], found["code"], scenario["id"], scenario["code"], org, operator)


async def authorize(client: httpx.AsyncClient, resident: str, scenario_code: str) -> dict[str, Any]:
    """AuthorizeScenario answer data."""
    body = {"input": {"scenarioCode": scenario_code}}
    return data(await op(client, "AuthorizeScenario", body, resident))["authorizeScenario"]

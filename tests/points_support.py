"""Test helpers of points: residents with grams, conversion rules, behavior scenarios, consent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.auth import Principal
from app.participants import resident_id
from registry.models import ScenarioAuthorization
from tests.helpers import credit_code, data, op, token, unique
from tests.ledger_support import issue_grams

CENTER = token("center-ops", "center")


async def resident(grams: int = 0) -> tuple[str, str, int]:
    """A new resident (subject, token, participant id), holding `grams` in one lot."""
    subject = unique("res")
    participant_id = await resident_id(Principal(subject, frozenset({"resident"})))
    if grams:
        await issue_grams(participant_id, grams)
    return subject, token(subject), participant_id


async def set_rate(client, grams_per_point: int) -> dict:
    """Center sets the conversion rule; returns the rule."""
    body = await op(client, "SetConversionRule",
                    {"input": {"gramsPerPoint": str(grams_per_point)}}, CENTER)
    payload = data(body)["setConversionRule"]
    assert payload["userErrors"] == [], payload
    return payload["rule"]


async def convert(client, auth: str, grams: int | str, key: str | None = None) -> dict:
    """Run the contract's ConvertReductions; returns the payload."""
    body = await op(client, "ConvertReductions",
                    {"input": {"grams": str(grams), "idempotencyKey": key or unique("k")}}, auth)
    return data(body)["convertReductions"]


async def my_account(client, auth: str) -> dict:
    """The contract's MyAccount `account` object."""
    return data(await op(client, "MyAccount", {}, auth))["me"]["account"]


async def behavior_scenario(
    client, rules: list[tuple[str, int, int]], operator: str | None = None
) -> tuple[str, str, str]:
    """A behavior scenario defined by center: (code, operator credit code, operator token)."""
    operator = operator or credit_code()
    code = unique("BEH-")
    body = await op(client, "DefineBehaviorScenario", {"input": {
        "code": code, "name": f"行为 {code}", "operatorCreditCode": operator,
        "rules": [{"behavior": b, "experience": e, "dailyCap": c} for b, e, c in rules],
    }}, CENTER)
    payload = data(body)["defineBehaviorScenario"]
    assert payload["userErrors"] == [], payload
    return code, operator, token(unique("op"), "scenario_operator", org=operator)


async def consent(participant_id: int, code: str, since: datetime | None = None) -> None:
    """An authorization active from `since` (default: a week ago), straight in the table."""
    await ScenarioAuthorization.create(
        participant_id=participant_id, scenario_code=code,
        granted_at=since or datetime.now(UTC) - timedelta(days=7),
    )


def event(subject: str, behavior: str, when: datetime | None = None,
          ref: str | None = None) -> dict:
    """One BehaviorEventInput."""
    return {"subject": subject, "behavior": behavior,
            "occurredAt": (when or datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
            "externalRef": unique("ev") if ref is None else ref}


async def record(client, auth: str, code: str, events: list[dict]) -> dict:
    """Run the contract's RecordBehaviors; returns the payload."""
    body = await op(client, "RecordBehaviors",
                    {"input": {"scenarioCode": code, "events": events}}, auth)
    return data(body)["recordBehaviors"]

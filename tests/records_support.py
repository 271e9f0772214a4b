"""Published scenarios, authorized residents and record batches for the records tests.

Methodology and scenario rows are inserted already published (their approval path has its own
tests); residents open their accounts the real way; authorizations start in the past so records
of the last weeks count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from app.auth import Principal
from app.participants import organisation_id, resident_id
from registry.models import (
    Methodology,
    MethodologyKind,
    MethodologyStatus,
    Scenario,
    ScenarioAuthorization,
    ScenarioStatus,
)
from registry.rules import SHANGHAI
from tests.helpers import credit_code, data, op, token, unique

CENTER = token("records-center", "center")


@dataclass
class World:
    """A published scenario, its operator's token and some authorized residents."""

    code: str
    scenario_id: int
    org: str
    operator: str
    grams_per_unit: int
    cap: int | None
    subjects: list[str] = field(default_factory=list)
    residents: dict[str, int] = field(default_factory=dict)


def ago(**delta: float) -> datetime:
    """An instant that long before now (UTC)."""
    return datetime.now(UTC) - timedelta(**delta)


def shanghai_noon(days_ago: int) -> datetime:
    """Noon, Asia/Shanghai, `days_ago` calendar days back (days_ago >= 1 is always past)."""
    day = datetime.now(SHANGHAI).date() - timedelta(days=days_ago)
    return datetime(day.year, day.month, day.day, 12, tzinfo=SHANGHAI).astimezone(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 with offset."""
    return moment.isoformat()


async def make_world(
    residents: int = 3,
    grams_per_unit: int = 100,
    cap: int | None = 1000,
    authorized_since: timedelta = timedelta(days=80),
    org: str | None = None,
    code: str | None = None,
) -> World:
    """A published scenario with `residents` residents authorized since `authorized_since` ago."""
    org = org or credit_code()
    operator_id = await organisation_id(org)
    methodology = await Methodology.create(
        code=unique("RM-"),
        name="Records test trips",
        kind=MethodologyKind.SCENARIO.value,
        methodology_class="II",
        version="1.0",
        activity_unit="passenger-km",
        grams_per_unit=grams_per_unit,
        daily_cap_grams=cap,
        status=MethodologyStatus.PUBLISHED.value,
        submitted_by="records-test",
        published_at=ago(days=100),
    )
    code = code or unique("RS-").upper()
    scenario = await Scenario.create(
        code=code,
        name="Records test scenario",
        methodology_id=methodology.id,
        operator_participant_id=operator_id,
        operator_org=org,
        no_double_counting_commitment=True,
        status=ScenarioStatus.PUBLISHED.value,
        published_at=ago(days=95),
    )
    world = World(
        code=code,
        scenario_id=scenario.id,
        org=org,
        operator=token(unique("op"), "scenario_operator", org=org),
        grams_per_unit=grams_per_unit,
        cap=cap,
    )
    for _ in range(residents):
        await add_resident(world, since=authorized_since)
    return world


async def add_resident(
    world: World, since: timedelta | None = timedelta(days=80), until: timedelta | None = None
) -> str:
    """A new resident, authorized from `since` ago until `until` ago (None: not authorized)."""
    subject = unique("res")
    pid = await resident_id(Principal(subject=subject, roles=frozenset({"resident"})))
    if since is not None:
        await ScenarioAuthorization.create(
            participant_id=pid,
            scenario_code=world.code,
            granted_at=ago() - since,
            revoked_at=None if until is None else ago() - until,
        )
    world.subjects.append(subject)
    world.residents[subject] = pid
    return subject


def record(subject: str, quantity: float, when: datetime, ref: str | None = None) -> dict[str, Any]:
    """One record as the contract's ScenarioRecordInput."""
    return {
        "subject": subject,
        "quantity": quantity,
        "occurredAt": iso(when),
        "externalRef": unique("ref") if ref is None else ref,
    }


async def submit(
    client: httpx.AsyncClient, world: World, records: list[dict[str, Any]], auth: str | None = None
) -> dict[str, Any]:
    """SubmitScenarioRecords through the contract operation; the payload."""
    body = await op(
        client,
        "SubmitScenarioRecords",
        {"input": {"scenarioCode": world.code, "records": records}},
        auth or world.operator,
    )
    return data(body)["submitScenarioRecords"]


async def issue(
    client: httpx.AsyncClient, code: str, period_end: datetime, key: str | None = None,
    auth: str | None = None,
) -> dict[str, Any]:
    """IssueScenarioReductions through the contract operation; the payload."""
    variables = {
        "input": {"scenarioCode": code, "periodEnd": iso(period_end), "idempotencyKey": key or unique("k")}
    }
    body = await op(client, "IssueScenarioReductions", variables, auth or CENTER)
    return data(body)["issueScenarioReductions"]


def answers(payload: dict[str, Any]) -> tuple[int, int, list[tuple[int, str]]]:
    """(accepted, duplicates, [(index, code)]) of a per-item result."""
    return (
        payload["accepted"],
        payload["duplicates"],
        [(r["index"], r["code"]) for r in payload["rejected"]],
    )


def ndjson(records: list[dict[str, Any]]) -> bytes:
    """Records as NDJSON lines."""
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


async def stream(client, world: World, body: bytes, auth: str | None = None, code: str | None = None):
    """POST an NDJSON body; the response."""
    headers = {"authorization": f"Bearer {auth or world.operator}",
               "content-type": "application/x-ndjson"}
    return await client.post(f"/ingest/scenarios/{code or world.code}/records", content=body,
                             headers=headers)

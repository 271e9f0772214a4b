"""Behavior scenarios (Art. 10): center defines them, their operator reports events, residents
earn experience under a daily cap per person per behavior per Asia/Shanghai day.

Experience is its own counter (not a ledger asset): each event keeps what it computed and what
it earned, and the participant total rises in the same transaction as the events.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app import audit
from app.auth import Principal
from app.errors import Duplicate, InvalidInput, NotFound
from app.events import account_changed
from app.instants import representable, too_far
from app.participants import Participant, organisation_id
from app.sql import insert_rows
from mall.rules import is_valid_credit_code, normalise_credit_code
from points.credit import refresh_credit_many
from points.growth import record_crossings
from points.models import (
    BehaviorDailyUsage,
    BehaviorEvent,
    BehaviorRule,
    BehaviorScenario,
    Experience,
)
from points.rules import (
    MAX_EVENTS,
    MAX_EXPERIENCE,
    Rule,
    check_rules,
    clip_to_cap,
    in_period,
    shanghai_day,
)
from registry.approval_rules import check_code, check_name
from registry.authorizations import active_authorizations, authorized_at
from registry.scenarios import claim_code

log = logging.getLogger(__name__)

_EVENT_COLUMNS = (
    "scenario_id", "external_ref", "participant_id", "behavior", "computed_experience",
    "earned_experience", "occurred_at", "day", "created_at",
)
_EXPERIENCE_COLUMNS = ("participant_id", "total", "updated_at")
# The events' earned experience already stops at MAX_EXPERIENCE; the total stops there too when
# two batches of one person, each clipped against the total it read, add up past it.
_ADD_EXPERIENCE = (
    " ON CONFLICT (participant_id) DO UPDATE"
    f" SET total = CASE WHEN points_experience.total > {MAX_EXPERIENCE} - excluded.total"
    f" THEN {MAX_EXPERIENCE} ELSE points_experience.total + excluded.total END,"
    " updated_at = excluded.updated_at"
    " RETURNING participant_id, total"
)
_USAGE_COLUMNS = ("scenario_id", "behavior", "participant_id", "day", "experience")
_SET_USAGE = (
    " ON CONFLICT (scenario_id, participant_id, day, behavior) DO UPDATE"
    " SET experience = excluded.experience"
)


@dataclass(frozen=True)
class EventInput:
    """One reported behavior as the operator sent it."""

    subject: str
    behavior: str
    occurred_at: datetime
    external_ref: str


@dataclass
class BatchResult:
    """Per-item answer of a batch: accepted, duplicates, rejected (index, code, message)."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ScenarioView:
    """A behavior scenario with its rules."""

    code: str
    name: str
    operator_org: str
    rules: list[Rule]


async def define_scenario(
    principal: Principal, code: str, name: str, operator_credit_code: str, rules: list[Rule]
) -> ScenarioView:
    """Center: a new behavior scenario, its operator organisation and its rules."""
    principal.require("center")
    code = check_code(code)
    name = check_name(name)
    operator = normalise_credit_code(operator_credit_code)
    if not is_valid_credit_code(operator):
        raise InvalidInput(
            "operatorCreditCode is not a valid unified social credit code.", "operatorCreditCode"
        )
    checked = check_rules(rules)
    operator_id = await organisation_id(operator)
    try:
        async with in_transaction() as conn:
            await claim_code(conn, code)
            scenario = await BehaviorScenario.create(
                code=code, name=name, operator_participant_id=operator_id, operator_org=operator,
                defined_by=principal.subject, using_db=conn,
            )
            await BehaviorRule.bulk_create(
                [BehaviorRule(scenario_id=scenario.id, behavior=r.behavior,
                              experience=r.experience, daily_cap=r.daily_cap) for r in checked],
                using_db=conn,
            )
    except IntegrityError:
        raise Duplicate(f"Scenario code {code} is already in use.", "code") from None
    await audit.record(principal, "define_behavior_scenario", "behavior_scenario", code)
    return ScenarioView(code, name, operator, checked)


async def scenario_view(code: str) -> ScenarioView | None:
    """A behavior scenario and its rules by code, or None."""
    scenario = await BehaviorScenario.filter(code=code).first()
    if scenario is None:
        return None
    rules = await BehaviorRule.filter(scenario_id=scenario.id).order_by("behavior")
    return ScenarioView(
        scenario.code, scenario.name, scenario.operator_org,
        [Rule(r.behavior, r.experience, r.daily_cap) for r in rules],
    )


async def scenario_views() -> list[ScenarioView]:
    """Every behavior scenario and its rules, by code (residents choose which to authorize)."""
    scenarios = await BehaviorScenario.all().order_by("code")
    rules: defaultdict[int, list[Rule]] = defaultdict(list)
    for r in await BehaviorRule.filter(scenario_id__in=[s.id for s in scenarios]).order_by("behavior"):
        rules[r.scenario_id].append(Rule(r.behavior, r.experience, r.daily_cap))
    return [ScenarioView(s.code, s.name, s.operator_org, rules[s.id]) for s in scenarios]


def _malformed(item: EventInput) -> str | None:
    if not 0 < len(item.subject.strip()) <= 128:
        return "subject must be 1 to 128 characters."
    if not 0 < len(item.external_ref) <= 128 or not item.external_ref.isprintable():
        return "externalRef must be 1 to 128 printable characters."
    if item.occurred_at.tzinfo is None:
        return "occurredAt must carry a UTC offset."
    if not representable(item.occurred_at):
        return too_far("occurredAt")
    return None


async def _residents(subjects: set[str]) -> dict[str, int]:
    rows = await Participant.filter(subject__in=subjects, kind="individual").values_list(
        "subject", "id"
    )
    return dict(rows)


async def record_behaviors(
    principal: Principal, scenario_code: str, events: list[EventInput]
) -> BatchResult:
    """The scenario's operator reports events; each answers accepted, duplicate or rejected."""
    org = principal.require_org("scenario_operator")
    if len(events) > MAX_EVENTS:
        raise InvalidInput(f"Send at most {MAX_EVENTS} events a call.", "events")
    scenario = await BehaviorScenario.filter(code=scenario_code.strip()).first()
    if scenario is None or scenario.operator_org != org:
        raise NotFound(f"No behavior scenario {scenario_code} of yours.", "scenarioCode")
    rules = {
        r.behavior: r for r in await BehaviorRule.filter(scenario_id=scenario.id)
    }
    now = datetime.now(UTC)
    result = BatchResult()
    residents = await _residents({e.subject.strip() for e in events})
    consent = await active_authorizations(scenario.code, residents.values())

    gains: dict[int, int] = defaultdict(int)
    async with in_transaction() as conn:
        # One batch per scenario at a time: references and daily caps stay exact.
        await BehaviorScenario.filter(id=scenario.id).select_for_update().using_db(conn).first()
        refs = {e.external_ref for e in events}
        seen = set(
            await BehaviorEvent.filter(scenario_id=scenario.id, external_ref__in=refs)
            .using_db(conn)
            .values_list("external_ref", flat=True)
        )
        problems = [_malformed(e) for e in events]
        days = {shanghai_day(e.occurred_at) for e, p in zip(events, problems, strict=True) if p is None}
        usage = await _usage(conn, scenario.id, residents.values(), days)
        lifetime = dict(
            await Experience.filter(participant_id__in=list(residents.values()))
            .using_db(conn).values_list("participant_id", "total")
        )
        touched: set[tuple[str, int, date]] = set()
        rows: list[tuple[object, ...]] = []
        for index, item in enumerate(events):
            problem = problems[index]
            if problem:
                result.rejected.append((index, "INVALID_INPUT", problem))
                continue
            if item.external_ref in seen:
                result.duplicates += 1
                continue
            rule = rules.get(item.behavior)
            participant_id = residents.get(item.subject.strip())
            if rule is None:
                result.rejected.append(
                    (index, "INVALID_INPUT", f"Unknown behavior {item.behavior!r} in this scenario.")
                )
                continue
            if not in_period(item.occurred_at, now):
                result.rejected.append(
                    (index, "OUT_OF_PERIOD", "occurredAt is in the future or older than 90 days.")
                )
                continue
            if participant_id is None or not authorized_at(
                consent.get(participant_id, []), item.occurred_at
            ):
                result.rejected.append(
                    (index, "NOT_AUTHORIZED", "The person had not authorized this scenario then.")
                )
                continue
            day = shanghai_day(item.occurred_at)
            key = (rule.behavior, participant_id, day)
            earned = clip_to_cap(rule.experience, usage[key], rule.daily_cap,
                                 lifetime.get(participant_id, 0) + gains[participant_id])
            usage[key] += earned
            touched.add(key)
            gains[participant_id] += earned
            seen.add(item.external_ref)
            rows.append((scenario.id, item.external_ref, participant_id, rule.behavior,
                         rule.experience, earned, item.occurred_at, day, now))
            result.accepted += 1
        await insert_rows(conn, "points_behavior_event", _EVENT_COLUMNS, rows)
        await _save_usage(conn, scenario.id, {k: usage[k] for k in touched})
        # One statement, rows in participant order (the order every batch locks them in).
        added = await insert_rows(conn, "points_experience", _EXPERIENCE_COLUMNS, [
            (p, gains[p], now) for p in sorted(p for p, gain in gains.items() if gain > 0)
        ], _ADD_EXPERIENCE)
        totals = {
            int(r["participant_id"]): (_before(int(r["total"]), gains[int(r["participant_id"])],
                                               lifetime.get(int(r["participant_id"]), 0)),
                                       int(r["total"]))
            for r in added
        }
        await record_crossings(conn, totals, now)
    if totals:
        await account_changed(totals)
        await refresh_credit_many(totals)
    return result


def _before(total: int, gain: int, read: int) -> int:
    """A person's experience before this batch: its new total less its gain, or, where the total
    stopped at MAX_EXPERIENCE, what was read before the batch."""
    return read if total == MAX_EXPERIENCE else total - gain


async def _usage(
    conn, scenario_id: int, participant_ids, days: set[date]
) -> defaultdict[tuple[str, int, date], int]:
    usage: defaultdict[tuple[str, int, date], int] = defaultdict(int)
    ids = set(participant_ids)
    if not ids or not days:
        return usage
    rows = await BehaviorDailyUsage.filter(
        scenario_id=scenario_id, participant_id__in=ids, day__in=days
    ).using_db(conn).values_list("behavior", "participant_id", "day", "experience")
    for behavior, participant_id, day, experience in rows:
        usage[(behavior, participant_id, day)] = experience
    return usage


async def _save_usage(
    conn, scenario_id: int, usage: dict[tuple[str, int, date], int]
) -> None:
    rows = [(scenario_id, behavior, participant_id, day, experience)
            for (behavior, participant_id, day), experience in sorted(usage.items())]
    if rows:
        await insert_rows(conn, "points_behavior_daily_usage", _USAGE_COLUMNS, rows, _SET_USAGE)

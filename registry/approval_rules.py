"""Pure rules of the approval path: methodology terms, scenario assessment, publicity windows."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from app.calendar import WorkingDays
from app.errors import InvalidInput, InvalidState
from registry.models import MethodologyClass, MethodologyKind, MethodologyStatus, ScenarioStatus

CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
# The most grams a scenario methodology may credit a unit of activity, or a person in a day:
# 1,000 t, far past any green-travel factor. With the daily cap at most this, no issuance of up
# to 90 days' records for a hundred million people passes a 64-bit total, so the ledger's own
# overflow refusal stays a backstop that no scenario can be stuck behind.
MAX_SCENARIO_GRAMS = 10**9
UNIT_RE = re.compile(r"^[^\s\x00-\x1f][^\x00-\x1f]{0,31}$")
PUBLICITY_WORKING_DAYS = 5
PUBLICITY_MAX_DAYS_BACK = 90
PUBLICITY_MAX_DAYS_AHEAD = 90
ASSESSING_BODIES = ("center", "exchange")


def check_code(value: str, field: str = "code") -> str:
    """A registry code: 1-64 letters, digits, dot, dash or underscore, starting alphanumeric."""
    value = value.strip()
    if not CODE_RE.match(value):
        raise InvalidInput(
            f"{field} must be 1 to 64 letters, digits, '.', '-' or '_' and start with a letter "
            "or digit.",
            field,
        )
    return value


def check_name(value: str, field: str = "name", limit: int = 200) -> str:
    """A display name: not blank, at most `limit` characters, no control characters."""
    value = value.strip()
    if not value or len(value) > limit or not value.isprintable():
        raise InvalidInput(f"{field} must be 1 to {limit} printable characters.", field)
    return value


def check_comment(value: str | None) -> str | None:
    """An optional assessment comment of at most 1000 characters."""
    if value is None:
        return None
    value = value.strip()
    if len(value) > 1000:
        raise InvalidInput("comment must be at most 1000 characters.", "comment")
    return value or None


def check_reason(value: str | None) -> str:
    """The reason a suspension or reinstatement must give: 1 to 1000 characters."""
    reason = (value or "").strip()
    if not reason or len(reason) > 1000:
        raise InvalidInput("reason must be 1 to 1000 characters: say why.", "reason")
    return reason


def status_change(current: str, allowed_from: str, to: str, what: str) -> str:
    """The status after a suspension or reinstatement; INVALID_STATE from any other status."""
    if current != allowed_from:
        raise InvalidState(
            f"The {what} is {current}; only a {allowed_from} {what} can become {to}.", "id")
    return to


@dataclass(frozen=True)
class MethodologyTerms:
    """What a methodology quantifies, checked."""

    code: str
    name: str
    kind: MethodologyKind
    methodology_class: MethodologyClass
    version: str
    activity_unit: str | None
    grams_per_unit: int | None
    daily_cap_grams: int | None


def methodology_terms(
    *,
    code: str,
    name: str,
    kind: str,
    methodology_class: str,
    version: str,
    activity_unit: str | None,
    grams_per_unit: int | None,
    daily_cap_grams: int | None,
) -> MethodologyTerms:
    """Check a submission: scenario methodologies need unit, factor and cap; project ones none."""
    try:
        kind_value = MethodologyKind(kind)
    except ValueError:
        raise InvalidInput("kind must be PROJECT or SCENARIO.", "kind") from None
    try:
        class_value = MethodologyClass(methodology_class)
    except ValueError:
        raise InvalidInput("methodologyClass must be I or II.", "methodologyClass") from None
    version = version.strip()
    if not VERSION_RE.match(version):
        raise InvalidInput(
            "version must be 1 to 32 letters, digits, '.', '-' or '_'.", "version"
        )
    if kind_value is MethodologyKind.SCENARIO:
        if activity_unit is None or not UNIT_RE.match(activity_unit.strip()):
            raise InvalidInput(
                "A scenario methodology needs activityUnit (1 to 32 characters).", "activityUnit"
            )
        activity_unit = activity_unit.strip()
        for field, value in (("gramsPerUnit", grams_per_unit), ("dailyCapGrams", daily_cap_grams)):
            if value is None or not 0 < value <= MAX_SCENARIO_GRAMS:
                raise InvalidInput(
                    f"A scenario methodology needs {field} from 1 to {MAX_SCENARIO_GRAMS}.", field)
    else:
        for field, value in (
            ("activityUnit", activity_unit),
            ("gramsPerUnit", grams_per_unit),
            ("dailyCapGrams", daily_cap_grams),
        ):
            if value is not None:
                raise InvalidInput(
                    f"A project methodology takes no {field}: projects are quantified per "
                    "project and verified before issuance.",
                    field,
                )
    return MethodologyTerms(
        code=check_code(code),
        name=check_name(name),
        kind=kind_value,
        methodology_class=class_value,
        version=version,
        activity_unit=activity_unit,
        grams_per_unit=grams_per_unit,
        daily_cap_grams=daily_cap_grams,
    )


def methodology_assessment(status: str, approve: bool) -> MethodologyStatus:
    """Center assessment: SUBMITTED -> PUBLIC_COMMENT (approve) or REJECTED."""
    if status != MethodologyStatus.SUBMITTED:
        raise InvalidState(f"Only a SUBMITTED methodology can be assessed; this one is {status}.")
    return MethodologyStatus.PUBLIC_COMMENT if approve else MethodologyStatus.REJECTED


def methodology_publication(status: str) -> MethodologyStatus:
    """Regulator publication: PUBLIC_COMMENT -> PUBLISHED."""
    if status != MethodologyStatus.PUBLIC_COMMENT:
        raise InvalidState(
            f"Only a methodology in PUBLIC_COMMENT can be published; this one is {status}."
        )
    return MethodologyStatus.PUBLISHED


def assessing_body(roles: Iterable[str]) -> str:
    """Which body (center or exchange) the caller assesses for; exactly one is required."""
    bodies = [b for b in ASSESSING_BODIES if b in set(roles)]
    if len(bodies) != 1:
        raise InvalidInput(
            "A scenario is assessed separately by the center and by the exchange: assess with a "
            "token holding exactly one of these roles."
        )
    return bodies[0]


def scenario_assessment_outcome(decisions: Mapping[str, bool]) -> ScenarioStatus:
    """A rejection by either body rejects; both approvals open publicity; else still pending."""
    if any(approve is False for approve in decisions.values()):
        return ScenarioStatus.REJECTED
    if all(decisions.get(body) is True for body in ASSESSING_BODIES):
        return ScenarioStatus.PUBLICITY
    return ScenarioStatus.SUBMITTED


def check_publicity_start(given: date, today: date) -> date:
    """A given start: up to 90 days back (already posted) and up to 90 days ahead."""
    if given < today - timedelta(days=PUBLICITY_MAX_DAYS_BACK):
        raise InvalidInput(
            f"publicityStartsOn may be at most {PUBLICITY_MAX_DAYS_BACK} days in the past.",
            "publicityStartsOn",
        )
    if given > today + timedelta(days=PUBLICITY_MAX_DAYS_AHEAD):
        raise InvalidInput(
            f"publicityStartsOn may be at most {PUBLICITY_MAX_DAYS_AHEAD} days ahead.",
            "publicityStartsOn",
        )
    return given


def publicity_window(
    today: date, given_start: date | None, calendar: WorkingDays
) -> tuple[date, date]:
    """(starts_on, ends_on): start defaults to the next working day; end is its 5th working day."""
    if given_start is None:
        start = calendar.next_working_day(today)
    else:
        start = check_publicity_start(given_start, today)
    return start, calendar.nth_working_day(start, PUBLICITY_WORKING_DAYS)


def scenario_publication(status: str, ends_on: date | None, today: date) -> ScenarioStatus:
    """Regulator publication: only from PUBLICITY and only once the publicity end has passed."""
    if status != ScenarioStatus.PUBLICITY or ends_on is None:
        raise InvalidState(f"Only a scenario in PUBLICITY can be published; this one is {status}.")
    if today <= ends_on:
        raise InvalidState(
            f"The publicity period ends on {ends_on.isoformat()}; publish from the next day."
        )
    return ScenarioStatus.PUBLISHED

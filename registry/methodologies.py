"""Methodology use cases: submit, assess (center), publish (regulator), list."""

from __future__ import annotations

from datetime import UTC, datetime

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from app import audit
from app.auth import STAFF_ROLES, Principal
from app.errors import Duplicate, InvalidInput, InvalidState, NotFound
from registry.approval_rules import (
    check_comment,
    methodology_assessment,
    methodology_publication,
    methodology_terms,
)
from registry.models import Methodology, MethodologyKind, MethodologyStatus

SUBMITTER_ROLES = ("scenario_operator", "project_developer", "center")
# What anyone signed in sees: the published methodologies, and those suspended since publication.
PUBLIC = frozenset({MethodologyStatus.PUBLISHED, MethodologyStatus.SUSPENDED})
ORG_SUBMITTER_ROLES = ("scenario_operator", "project_developer")


async def submit_methodology(
    principal: Principal,
    *,
    code: str,
    name: str,
    kind: str,
    methodology_class: str,
    version: str,
    activity_unit: str | None = None,
    grams_per_unit: int | None = None,
    daily_cap_grams: int | None = None,
) -> Methodology:
    """Submit a methodology version for assessment (organisations and the center)."""
    principal.require(*SUBMITTER_ROLES)
    org = None if principal.has("center") else principal.require_org(*ORG_SUBMITTER_ROLES)
    terms = methodology_terms(
        code=code,
        name=name,
        kind=kind,
        methodology_class=methodology_class,
        version=version,
        activity_unit=activity_unit,
        grams_per_unit=grams_per_unit,
        daily_cap_grams=daily_cap_grams,
    )
    async with in_transaction() as conn:
        earlier = await Methodology.filter(code=terms.code).using_db(conn).first()
        if earlier is not None and earlier.kind != terms.kind:
            raise InvalidInput(
                f"Methodology {terms.code} is a {earlier.kind} methodology; a new version keeps "
                "its kind.",
                "kind",
            )
        if await Methodology.filter(code=terms.code, version=terms.version).using_db(conn).exists():
            raise _duplicate(terms.code, terms.version)
        try:
            async with in_transaction() as savepoint:
                row = await Methodology.create(
                    code=terms.code,
                    name=terms.name,
                    kind=terms.kind.value,
                    methodology_class=terms.methodology_class.value,
                    version=terms.version,
                    activity_unit=terms.activity_unit,
                    grams_per_unit=terms.grams_per_unit,
                    daily_cap_grams=terms.daily_cap_grams,
                    submitted_by=principal.subject,
                    submitter_org=org,
                    using_db=savepoint,
                )
        except IntegrityError:
            raise _duplicate(terms.code, terms.version) from None
    return row


def _duplicate(code: str, version: str) -> Duplicate:
    return Duplicate(f"Methodology {code} version {version} already exists.", "version")


async def _locked(conn: object, methodology_id: int) -> Methodology:
    row = (
        await Methodology.filter(id=methodology_id).select_for_update().using_db(conn).first()
    )
    if row is None:
        raise NotFound("No such methodology.", "id")
    return row


async def assess_methodology(
    principal: Principal, methodology_id: int, approve: bool, comment: str | None = None
) -> Methodology:
    """Center assessment: SUBMITTED -> PUBLIC_COMMENT, or REJECTED; never by its submitter."""
    principal.require("center")
    comment = check_comment(comment)
    async with in_transaction() as conn:
        row = await _locked(conn, methodology_id)
        row.status = methodology_assessment(row.status, approve).value
        if row.submitted_by == principal.subject:
            raise InvalidState("A methodology is assessed by someone other than its submitter.", "id")
        row.assessed_by = principal.subject
        row.assessment_comment = comment
        row.assessed_at = datetime.now(UTC)
        await row.save(
            using_db=conn,
            update_fields=["status", "assessed_by", "assessment_comment", "assessed_at"],
        )
        await audit.record(principal, "methodology.assess", "Methodology", row.id, row.status)
    return row


async def publish_methodology(principal: Principal, methodology_id: int) -> Methodology:
    """Regulator publication: PUBLIC_COMMENT -> PUBLISHED."""
    principal.require("regulator")
    async with in_transaction() as conn:
        row = await _locked(conn, methodology_id)
        row.status = methodology_publication(row.status).value
        row.published_by = principal.subject
        row.published_at = datetime.now(UTC)
        await row.save(using_db=conn, update_fields=["status", "published_by", "published_at"])
        await audit.record(principal, "methodology.publish", "Methodology", row.id)
    return row


async def list_methodologies(
    principal: Principal, status: str | None = None, kind: str | None = None
) -> list[Methodology]:
    """Published (and suspended) ones to anyone; staff see all; an organisation also sees its own
    submissions."""
    query = Methodology.all()
    if status is not None:
        query = query.filter(status=MethodologyStatus(status).value)
    if kind is not None:
        query = query.filter(kind=MethodologyKind(kind).value)
    if not principal.has(*STAFF_ROLES):
        visible = Q(status__in=[s.value for s in PUBLIC])
        org = _acting_org(principal)
        if org:
            visible |= Q(submitter_org=org)
        query = query.filter(visible)
    return await query.order_by("code", "id")


def _acting_org(principal: Principal) -> str | None:
    """The organisation the caller submits methodologies for; None for other roles."""
    return principal.org if principal.has(*ORG_SUBMITTER_ROLES) else None


def visible_to(principal: Principal, methodology: Methodology) -> bool:
    """True when `principal` may see `methodology`: published (or suspended since), staff, or its
    own organisation's."""
    if methodology.status in PUBLIC or principal.has(*STAFF_ROLES):
        return True
    org = _acting_org(principal)
    return org is not None and methodology.submitter_org == org

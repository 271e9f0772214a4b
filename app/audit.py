"""Audit trail of staff reads of other people's data and of sensitive staff actions."""

from __future__ import annotations

import logging

from tortoise import fields
from tortoise.models import Model

from app.auth import Principal

log = logging.getLogger(__name__)
MAX_DETAIL = 4096  # a page of 100 ids of up to 19 digits takes 2,000


class AuditEvent(Model):
    """One audited action: who, what, on whom, when."""

    id = fields.BigIntField(primary_key=True)
    actor_subject = fields.CharField(max_length=128)
    actor_roles = fields.CharField(max_length=256)
    action = fields.CharField(max_length=64)
    target_type = fields.CharField(max_length=32)
    target_id = fields.CharField(max_length=64)
    detail = fields.TextField(default="")  # e.g. every id of a page of 100 rows a staff member read
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "audit_event"


async def record(
    principal: Principal, action: str, target_type: str, target_id: object, detail: str = ""
) -> None:
    """Append an audit event for an action by `principal`."""
    await AuditEvent.create(
        actor_subject=principal.subject,
        actor_roles=",".join(sorted(principal.roles)),
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        detail=detail[:MAX_DETAIL],
    )
    log.info("audit action=%s target=%s:%s", action, target_type, target_id)

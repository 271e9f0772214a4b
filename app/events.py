"""After-commit events: tell live subscribers that a participant's account changed."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from app.redis import get_store

log = logging.getLogger(__name__)


def account_channel(participant_id: int) -> str:
    """The pub/sub channel carrying changes of one participant's account."""
    return f"puhui:account:{participant_id}"


async def account_changed(participant_ids: Iterable[int]) -> None:
    """Publish a change notice for each participant; call only after the transaction commits."""
    for participant_id in set(participant_ids):
        try:
            await get_store().publish(account_channel(participant_id), "changed")
        except Exception:  # noqa: BLE001 - a lost notice must never fail the committed change
            log.warning("could not publish account change for participant %s", participant_id)

"""Aware instants sent by clients, checked against what Python's datetime can hold."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

_SHANGHAI = ZoneInfo("Asia/Shanghai")


def representable(moment: datetime, shanghai_day: bool = True) -> bool:
    """True when an aware instant has a UTC form in the years 1 to 9999, and an Asia/Shanghai
    one too when its Shanghai day is needed (a record's or an event's day, a vintage).

    ISO 8601 lets an offset carry a date across a year boundary ("0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00"); such an instant cannot be converted, stored or read back.
    """
    try:
        moment.astimezone(UTC)
        if shanghai_day:
            moment.astimezone(_SHANGHAI)
    except OverflowError:
        return False
    return True


def too_far(field: str) -> str:
    """The refusal of an instant that is not `representable`, naming its field."""
    return f"{field} is too far in the past or the future for a date-time (years 1 to 9999)."

"""The per-process memory of consent: read once per person, afresh for what it cannot answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from registry import consent, rules
from registry.rules import Item

NOW = datetime.now(UTC)


@pytest.fixture(autouse=True)
def _empty_memory():
    consent.forget()
    yield
    consent.forget()


def _item(index: int, pid_subject: str, at: datetime) -> Item:
    return Item(index, pid_subject, Decimal(1), at, f"r{index}", 100, rules.shanghai_day(at))


class Grants:
    """The stored grant intervals per person, and who was looked up."""

    def __init__(self, intervals: dict[int, list[tuple[datetime, datetime | None]]]) -> None:
        self.intervals = intervals
        self.asked: list[list[int]] = []

    async def __call__(self, pids: list[int]) -> dict[int, list[tuple[datetime, datetime | None]]]:
        self.asked.append(pids)
        return {pid: list(self.intervals.get(pid, [])) for pid in pids}


async def test_a_person_is_read_once_for_what_happened_before_the_read():
    grants = Grants({1: [(NOW - timedelta(days=10), None)], 2: [(NOW - timedelta(days=1), None)]})
    old = [(_item(0, "a", NOW - timedelta(days=2)), 1), (_item(1, "b", NOW - timedelta(days=2)), 2)]
    assert await consent.unauthorized("S", old, grants) == {1}
    again = [(_item(2, "a", NOW - timedelta(days=3)), 1), (_item(3, "b", NOW - timedelta(hours=5)), 2)]
    assert await consent.unauthorized("S", again, grants) == set()
    assert grants.asked == [[1, 2]]
    assert await consent.unauthorized("OTHER", again, grants) == set()  # another scenario: read
    assert grants.asked == [[1, 2], [1, 2]]


async def test_an_item_later_than_the_memory_answers_for_is_read_afresh():
    grants = Grants({1: [(NOW - timedelta(days=10), None)]})
    assert await consent.unauthorized("S", [(_item(0, "a", NOW - timedelta(days=1)), 1)], grants) == set()
    grants.intervals[1] = [(NOW - timedelta(days=10), NOW - timedelta(seconds=5))]  # revoked since
    recent = (_item(1, "a", NOW - timedelta(seconds=2)), 1)  # within the margin of the first read
    before = (_item(2, "a", NOW - timedelta(days=2)), 1)
    assert await consent.unauthorized("S", [recent, before], grants) == {1}
    assert grants.asked == [[1], [1]]


async def test_a_full_memory_starts_again(monkeypatch):
    monkeypatch.setattr(consent, "CAPACITY", 2)
    grants = Grants({pid: [(NOW - timedelta(days=10), None)] for pid in range(1, 5)})
    at = NOW - timedelta(days=1)
    for pid in range(1, 5):
        assert await consent.unauthorized("S", [(_item(pid, "x", at), pid)], grants) == set()
    assert await consent.unauthorized("S", [(_item(9, "x", at), 1)], grants) == set()
    assert grants.asked == [[1], [2], [3], [4], [1]]

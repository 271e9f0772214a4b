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


def _item(index: int, pid: int, at: datetime) -> Item:
    return Item(index, f"p{pid}", Decimal(1), at, f"r{index}", 100, rules.shanghai_day(at))


async def _refused(code: str, items: list[Item], grants: Grants, now: datetime = NOW) -> set[int]:
    residents = {f"p{pid}": pid for pid in range(1, 10)}
    return await consent.unauthorized(code, items, residents, now, None, grants)


class Grants:
    """The stored grant intervals per person, and who was looked up."""

    def __init__(self, intervals: dict[int, list[tuple[datetime, datetime | None]]]) -> None:
        self.intervals = intervals
        self.asked: list[list[int]] = []

    async def __call__(self, pids: list[int]) -> dict[int, list[tuple[datetime, datetime | None]]]:
        self.asked.append(pids)
        return {pid: list(self.intervals.get(pid, [])) for pid in pids}


async def test_only_items_in_period_of_known_residents_are_judged():
    grants = Grants({})
    items = [_item(0, 1, NOW + timedelta(seconds=1)), _item(1, 1, NOW - timedelta(days=91)),
             Item(2, "stranger", Decimal(1), NOW, "r2", 100, rules.shanghai_day(NOW)),
             _item(3, 1, NOW - timedelta(days=1))]
    assert await _refused("S", items, grants) == {3}
    assert grants.asked == [[1]]


async def test_a_person_is_read_once_for_what_happened_before_the_read():
    grants = Grants({1: [(NOW - timedelta(days=10), None)], 2: [(NOW - timedelta(days=1), None)]})
    old = [_item(0, 1, NOW - timedelta(days=2)), _item(1, 2, NOW - timedelta(days=2))]
    assert await _refused("S", old, grants) == {1}
    again = [_item(2, 1, NOW - timedelta(days=3)), _item(3, 2, NOW - timedelta(hours=5))]
    assert await _refused("S", again, grants) == set()
    assert grants.asked == [[1, 2]]
    assert await _refused("OTHER", again, grants) == set()  # another scenario: read
    assert grants.asked == [[1, 2], [1, 2]]


async def test_an_item_later_than_the_memory_answers_for_is_read_afresh():
    now = datetime.now(UTC)  # the memory answers up to the real clock's reading less its margin
    grants = Grants({1: [(now - timedelta(days=10), None)]})
    assert await _refused("S", [_item(0, 1, now - timedelta(days=1))], grants, now) == set()
    grants.intervals[1] = [(now - timedelta(days=10), now - timedelta(seconds=5))]  # revoked since
    recent = _item(1, 1, now - timedelta(seconds=2))  # within the margin of the first read
    before = _item(2, 1, now - timedelta(days=2))
    assert await _refused("S", [recent, before], grants, now) == {1}
    assert grants.asked == [[1], [1]]


async def test_a_full_memory_starts_again(monkeypatch):
    monkeypatch.setattr(consent, "CAPACITY", 2)
    grants = Grants({pid: [(NOW - timedelta(days=10), None)] for pid in range(1, 5)})
    at = NOW - timedelta(days=1)
    for pid in range(1, 5):
        assert await _refused("S", [_item(pid, pid, at)], grants) == set()
    assert await _refused("S", [_item(9, 1, at)], grants) == set()
    assert grants.asked == [[1], [2], [3], [4], [1]]


async def test_several_grant_intervals_and_none_are_remembered_too():
    day = timedelta(days=1)
    grants = Grants({1: [(NOW - 9 * day, NOW - 7 * day), (NOW - 5 * day, None)], 2: []})
    items = [_item(0, 1, NOW - 8 * day), _item(1, 1, NOW - 6 * day), _item(2, 1, NOW - 4 * day),
             _item(3, 2, NOW - 4 * day)]
    assert await _refused("S", items, grants) == {1, 3}
    assert await _refused("S", items, grants) == {1, 3}  # from memory this time
    assert grants.asked == [[1, 2]]

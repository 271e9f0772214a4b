"""Pure rules of scenario records: exact grams, item checks, periods, the cap, NDJSON reading."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from app.errors import InvalidState
from registry import rules
from registry.ingest import LineParser, parse_line, read_chunks
from registry.issuance import _vintage
from registry.rules import Item, Rejection
from registry.settlement import Total

NOW = datetime(2026, 11, 20, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("quantity", "factor", "grams"),
    [
        (2.3, 100, 230),            # 2.3 * 100 is 229.99999999999997 in binary floating point
        (0.1, 3, 0),
        (Decimal("0.29"), 100, 29),
        (1.15, 100, 115),
        (6.789, 100, 678),
        (7, 47, 329),
        (Decimal("0.99999999999999999999"), 100, 99),
    ],
)
def test_grams_are_the_exact_floor_of_quantity_times_factor(quantity, factor, grams):
    assert rules.computed_grams(rules.as_decimal(quantity), factor) == grams


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "1.5", None, Decimal("NaN")])
def test_only_finite_numbers_are_quantities(value):
    assert rules.as_decimal(value) is None


def _check(**changes):
    values = {"subject": "s", "quantity": 1.5, "occurred_at": NOW, "external_ref": "r"}
    values.update(changes)
    return rules.check_item(7, values["subject"], values["quantity"], values["occurred_at"],
                            values["external_ref"], 100)


def test_a_well_formed_item_carries_its_grams_and_shanghai_day():
    item = _check(occurred_at=datetime(2026, 11, 20, 16, 30, tzinfo=UTC))
    assert isinstance(item, Item)
    assert (item.index, item.grams, item.day) == (7, 150, date(2026, 11, 21))


@pytest.mark.parametrize(
    "changes",
    [
        {"quantity": 0}, {"quantity": -1}, {"quantity": "2"}, {"quantity": 1e300},
        {"external_ref": ""}, {"external_ref": "x" * 129}, {"external_ref": 5},
        {"subject": ""}, {"subject": None},
        {"occurred_at": datetime(2026, 11, 20, 4, 0)}, {"occurred_at": "not a date"},
        {"occurred_at": "2026-11-20T04:00:00"},
    ],
)
def test_malformed_items_are_invalid_input(changes):
    result = _check(**changes)
    assert isinstance(result, Rejection) and result.code == "INVALID_INPUT" and result.index == 7


def _item(index: int, at: datetime, grams: int = 100, subject: str = "s", ref: str | None = None) -> Item:
    return Item(index, subject, Decimal(1), at, ref or f"r{index}", grams, rules.shanghai_day(at))


def _in_period(at: datetime, issued_through: datetime | None = None) -> bool:
    decision = rules.classify([_item(0, at)], {"s": 1}, NOW, issued_through, (), ())
    low, high = rules.period_bounds(NOW, issued_through)
    assert (low <= at <= high) is not bool(decision.rejected)
    return not decision.rejected


def test_period_bounds():
    assert _in_period(NOW)
    assert not _in_period(NOW + timedelta(seconds=1))
    assert _in_period(NOW - timedelta(days=90))
    assert not _in_period(NOW - timedelta(days=90, seconds=1))
    issued = NOW - timedelta(days=3)
    assert not _in_period(issued, issued)
    assert _in_period(issued + timedelta(microseconds=1), issued)


def test_refusals_take_precedence_in_order_and_do_not_use_up_a_ref():
    at = NOW - timedelta(hours=1)
    items = [
        _item(0, at, ref="stored"),                                 # duplicate of a stored ref
        _item(1, NOW + timedelta(hours=1), ref="a"),                # out of period
        _item(2, at, ref="a", subject="nobody"),                    # unknown person
        _item(3, at, ref="a"),                                      # consent missing
        _item(4, at, ref="a"),                                      # accepted
        _item(5, NOW + timedelta(hours=1), ref="a"),                # duplicate first
    ]
    decision = rules.classify(items, {"s": 1}, NOW, None, {"stored"}, {3})
    assert decision.duplicates == 2
    assert [(r.index, r.code) for r in decision.rejected] == [
        (1, "OUT_OF_PERIOD"), (2, "NOT_AUTHORIZED"), (3, "NOT_AUTHORIZED")]
    assert [(item.index, pid) for item, pid in decision.accepted] == [(4, 1)]


def test_a_suspension_refuses_after_a_duplicate_and_before_consent():
    start, end = NOW - timedelta(days=3), NOW - timedelta(days=2)
    inside = start + timedelta(hours=5)
    items = [
        _item(0, inside, ref="stored"),                             # duplicate of a stored ref
        _item(1, inside, ref="a"),                                  # suspended, consent missing too
        _item(2, start, ref="b"),                                   # suspended from its first instant
        _item(3, end, ref="c"),                                     # reinstated: accepted
        _item(4, inside, ref="d", subject="nobody"),                # suspended before unknown
    ]
    decision = rules.classify(items, {"s": 1}, NOW, None, {"stored"}, {1}, [(start, end)])
    assert decision.duplicates == 1
    assert [(r.index, r.code, r.message) for r in decision.rejected] == [
        (i, "OUT_OF_PERIOD", rules.SUSPENDED_MESSAGE) for i in (1, 2, 4)]
    assert [item.index for item, _ in decision.accepted] == [3]


def test_the_cap_leaves_records_in_id_order_what_is_left_of_their_day():
    day, other = date(2026, 11, 19), date(2026, 11, 20)
    records = [(12, 1, day, 500), (10, 1, day, 500), (11, 2, day, 500), (13, 1, other, 700)]
    assert rules.settle(records, {(1, day): 408}, 1000) == {10: 500, 11: 500, 12: 92, 13: 700}
    assert rules.settle(records, {(1, day): 1000}, 1000) == {10: 0, 11: 500, 12: 0, 13: 700}
    assert rules.settle(records, {(1, day): 10**6}, None) == {10: 500, 11: 500, 12: 500, 13: 700}


def test_an_issuance_reads_from_the_start_of_the_shanghai_day_of_the_last_one():
    issued_through = datetime(2026, 11, 19, 17, 30, tzinfo=UTC)  # 01:30 on the 20th in Shanghai
    assert rules.period_start(issued_through) == datetime(2026, 11, 19, 16, 0, tzinfo=UTC)
    assert rules.period_start(None) == rules.EPOCH


def test_authorization_intervals_are_half_open():
    granted, revoked = NOW - timedelta(days=2), NOW - timedelta(days=1)
    assert rules.authorized_at([(granted, revoked)], granted)
    assert not rules.authorized_at([(granted, revoked)], revoked)
    assert rules.authorized_at([(granted, revoked), (NOW, None)], NOW + timedelta(days=9))


def test_serial_prefixes():
    assert rules.serial_prefix(rules.serial_base("metro-sh", 3, 2026), 1) == "SH-CI-SC-METRO-SH-2026-0001"
    assert rules.serial_prefix(rules.serial_base("odd code!", 3, 2026), 12) == "SH-CI-SC-S3-2026-0012"
    assert len(rules.serial_prefix(rules.serial_base("A" * 64, 3, 2026), 1)) <= 64


def test_ndjson_lines_parse_exactly_or_are_rejected():
    line = b'{"subject":"s","quantity":2.3,"occurredAt":"2026-11-20T08:00:00+08:00","externalRef":"r"}'
    item = parse_line(0, line, 100)
    assert isinstance(item, Item) and item.quantity == Decimal("2.3") and item.grams == 230
    for bad in (b"{", b"\xff", b'{"quantity": Infinity}', b"[]", b'"text"'):
        result = parse_line(4, bad, 100)
        assert isinstance(result, Rejection) and (result.index, result.code) == (4, "INVALID_INPUT")


async def _body(*parts: bytes):
    for part in parts:
        yield part


async def test_lines_are_read_across_body_chunks_in_bounded_chunks():
    line = b'{"subject":"s","quantity":1,"occurredAt":"2026-11-20T08:00:00+08:00","externalRef":"%d"}'
    text = b"\n".join(line % i for i in range(5)) + b"\n\n" + line % 6
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    chunks = [c async for c in read_chunks(_body(*pieces), 100, size=2)]
    assert [len(c) for c in chunks] == [2, 2, 2]
    assert [e.index for c in chunks for e in c] == [0, 1, 2, 3, 4, 6]
    assert all(isinstance(e, Item) for c in chunks for e in c)


async def test_an_overlong_line_is_one_rejection_and_reading_goes_on():
    from registry.ingest import MAX_LINE

    good = b'{"subject":"s","quantity":1,"occurredAt":"2026-11-20T08:00:00+08:00","externalRef":"a"}'
    long_parts = [b"x" * 40_000 for _ in range(MAX_LINE // 40_000 + 3)]
    chunks = [c async for c in read_chunks(_body(good + b"\n", *long_parts, b"tail\n", good), 100)]
    entries = [e for c in chunks for e in c]
    assert [(e.index, type(e).__name__) for e in entries] == [
        (0, "Item"), (1, "Rejection"), (2, "Item")]


def _lines() -> list[bytes]:
    """NDJSON lines around every edge of the plain path (numbers, instants, strings, shapes)."""
    import json
    import random

    rng = random.Random(11)
    quantities = ["1", "0", "-0", "2.3", "2.30", "23e-1", "0.29", "6.789", "1e-9", "1e-10", "9.99e11",
                  "1e12", "1e300", "1e400", "1e-400", "123456789012345", "1234567890123456",
                  "2.29999999999999999999", "0.1000000000000000001", "18446744073709551616", "true",
                  '"1.5"', "null", "[1]", "-3.5"]
    quantities += [repr(round(rng.uniform(0.001, 500), rng.randrange(0, 8))) for _ in range(200)]
    instants = ["2026-11-20T08:00:00+08:00", "2026-11-20T15:59:59.999999Z", "2026-11-20T16:00:00Z",
                "2026-11-20T16:00:00.5-07:30", "2026-11-20T08:00:00", "20261120T080000+0800",
                "2026-W47-5T08:00:00+08:00", "1901-01-01T00:00:00+00:00", "1986-05-04T01:30:00+08:00",
                "not a date", "2026-11-20 23:59:59+14:00"]
    strings = ['"s"', '""', '"' + "x" * 128 + '"', '"' + "x" * 129 + '"', '"\\u00e9\\n\\"q\\""', "5",
               '"\\ud800"']
    lines = []
    for n in range(600):
        fields = {
            "subject": rng.choice(strings), "quantity": rng.choice(quantities),
            "occurredAt": json.dumps(rng.choice(instants)), "externalRef": rng.choice(strings),
        }
        keys = list(fields)
        if n % 7 == 0:
            rng.shuffle(keys)
        if n % 11 == 0:
            keys.pop()
        lines.append(("{" + ", ".join(f'"{k}": {fields[k]}' for k in keys) + "}").encode())
    return lines + [b"[]", b"{", b"\xff", b'{"quantity": NaN}', b"  {} \r", b"{}"]


def test_the_plain_path_reads_every_line_as_the_exact_path_does():
    from registry.ingest import LineParser, long_numbers

    parser = LineParser(47)
    for index, line in enumerate(_lines()):
        assert parser.parse(index, line, not long_numbers(line)) == parse_line(index, line, 47), line


def test_the_fast_line_parser_refuses_grams_beyond_64_bits_like_the_exact_one():
    """A plain number whose grams overflow BIGINT is refused, not turned into an Item."""
    line = (b'{"subject":"s","quantity":99999999999,'
            b'"occurredAt":"2026-01-02T08:00:00+08:00","externalRef":"r"}')
    fast = LineParser(10**9).parse(0, line)
    exact = parse_line(0, line, 10**9)
    assert isinstance(fast, Rejection) and fast == exact
    assert fast.message == "quantity is too large."


def test_a_lot_has_the_vintage_of_its_records_and_never_two():
    december = Total(1, 100, 1, date(2026, 12, 30), date(2026, 12, 31))
    assert _vintage([december]) == 2026  # issued in January, still the year they happened
    january = Total(2, 100, 1, date(2027, 1, 1), date(2027, 1, 2))
    with pytest.raises(InvalidState) as both:
        _vintage([december, january])
    assert "2026-12-31T23:59:59.999999+08:00" in both.value.message
    assert both.value.field == "periodEnd"

"""Pure mall rules: credit codes, voucher codes, right terms, redeemability, masking, retirement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.errors import InvalidInput, InvalidState
from mall.rules import (
    VOUCHER_ALPHABET,
    check_merchant_application,
    check_quantity,
    check_redeemable,
    check_right_terms,
    credit_code_check_char,
    format_voucher,
    is_valid_credit_code,
    listing_expiry,
    mask_phone,
    new_voucher_code,
    parse_voucher,
    voucher_check_char,
)
from registry.models import RetirementChannel
from registry.retirement_rules import certificate_number, check_retirement, mask_numbers, mask_person
from tests.helpers import credit_code

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
GRADES = ("C", "B", "A", "AA", "AAA")

# Real unified social credit codes as published on business licences.
REAL_CODES = ["9144030071526726XG", "914403001922038216", "91330100799655058B", "91110000802100433B"]


@pytest.mark.parametrize("code", REAL_CODES)
def test_real_credit_codes_pass_the_check(code):
    assert is_valid_credit_code(code)
    assert credit_code_check_char(code[:17]) == code[17]


@pytest.mark.parametrize(
    "code",
    [
        "9144030071526726XA",  # wrong check character
        "914403001922038217",  # wrong check digit
        "9144030071526726X",  # 17 characters
        "9144030071526726XGG",  # 19 characters
        "9I4403001922038216",  # I is not in the alphabet
        "914403001922O38216",  # O is not in the alphabet
        "",
    ],
)
def test_malformed_credit_codes_fail(code):
    assert not is_valid_credit_code(code)


def test_a_single_changed_character_is_caught():
    code = REAL_CODES[1]
    for position in range(17):
        for ch in "0123456789ABCDEFGHJKLMNPQRTUWXY":
            if ch != code[position]:
                changed = code[:position] + ch + code[position + 1 :]
                assert not is_valid_credit_code(changed), changed


def test_generated_test_codes_are_valid():
    assert all(is_valid_credit_code(credit_code()) for _ in range(50))


def test_application_requires_the_token_org_and_a_phone():
    code = REAL_CODES[0]
    assert check_merchant_application(" 腾讯 ", code.lower(), " 138 0013 8000 ", code) == (
        "腾讯", code, "138 0013 8000",
    )
    with pytest.raises(InvalidInput) as exc:
        check_merchant_application("x", REAL_CODES[1], "13800138000", code)
    assert exc.value.field == "creditCode"
    with pytest.raises(InvalidInput) as exc:
        check_merchant_application("x", "9144030071526726XA", "13800138000", "9144030071526726XA")
    assert exc.value.field == "creditCode"
    with pytest.raises(InvalidInput) as exc:
        check_merchant_application("x", code, "call me", code)
    assert exc.value.field == "contact"
    with pytest.raises(InvalidInput) as exc:
        check_merchant_application("  ", code, "13800138000", code)
    assert exc.value.field == "name"


def test_phone_is_masked():
    assert mask_phone("13800138000") == "138****8000"
    assert mask_phone("+86 138-0013-8000") == "+86*******8000"
    assert mask_phone("021-5555") == "0**5555"
    assert "0013" not in mask_phone("13800138000")


def test_voucher_codes_are_short_readable_and_self_checking():
    codes = {new_voucher_code() for _ in range(2000)}
    assert len(codes) == 2000
    for code in list(codes)[:200]:
        assert len(code) == 12 and set(code) <= set(VOUCHER_ALPHABET)
        assert not set(code) & set("ILOU")
        shown = format_voucher(code)
        assert len(shown) == 14 and shown.count("-") == 2
        assert parse_voucher(shown) == code
        assert parse_voucher(shown.lower().replace("-", " ")) == code


def test_voucher_check_catches_one_wrong_or_swapped_character():
    body = "7KQ2M9XD4HT"
    code = body + voucher_check_char(body)
    assert parse_voucher(code) == code
    for position in range(12):
        for ch in VOUCHER_ALPHABET:
            if ch != code[position]:
                assert parse_voucher(code[:position] + ch + code[position + 1 :]) is None
    for position in range(11):
        if code[position] != code[position + 1]:
            swapped = code[:position] + code[position + 1] + code[position] + code[position + 2 :]
            assert parse_voucher(swapped) is None


def test_voucher_reading_aliases():
    body = "00000000111"
    code = body + voucher_check_char(body)
    typed = "oooo-OOOO-1Li" + code[-1].lower()
    assert parse_voucher(typed) == code
    assert parse_voucher(body) is None
    assert parse_voucher("") is None
    assert parse_voucher("ÄÄÄÄ-ÄÄÄÄ-ÄÄÄÄ") is None


def _terms(**overrides):
    values = dict(
        title="Coffee", description=None, category="food", points_price=100, stock=10,
        per_person_limit=None, valid_from=None, valid_until=None, min_credit_grade=None,
        grades=GRADES, now=NOW,
    )
    values.update(overrides)
    return check_right_terms(**values)


def test_right_terms_defaults():
    terms = _terms()
    assert terms.per_person_limit == 1 and terms.valid_from == NOW and terms.valid_until is None
    assert terms.description == ""


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"title": "  "}, "title"),
        ({"title": "x" * 101}, "title"),
        ({"category": ""}, "category"),
        ({"points_price": 0}, "pointsPrice"),
        ({"points_price": -5}, "pointsPrice"),
        ({"stock": -1}, "stock"),
        ({"per_person_limit": 0}, "perPersonLimit"),
        ({"valid_until": NOW - timedelta(days=1)}, "validUntil"),
        ({"valid_from": NOW + timedelta(days=2), "valid_until": NOW + timedelta(days=1)}, "validUntil"),
        ({"valid_from": NOW.replace(tzinfo=None)}, "validFrom"),
        ({"min_credit_grade": "Z"}, "minCreditGrade"),
        ({"description": "d" * 2001}, "description"),
    ],
)
def test_bad_right_terms_name_the_field(overrides, field):
    with pytest.raises(InvalidInput) as exc:
        _terms(**overrides)
    assert exc.value.field == field


def test_stock_zero_and_a_grade_are_fine():
    terms = _terms(stock=0, min_credit_grade="aa")
    assert terms.stock == 0 and terms.min_credit_grade == "AA"


def test_quantity_bounds():
    assert check_quantity(1) == 1
    for bad in (0, -1, 1001):
        with pytest.raises(InvalidInput):
            check_quantity(bad)


def test_redeemable_only_when_on_sale():
    check_redeemable("APPROVED", False, NOW - timedelta(hours=1), None, NOW)
    check_redeemable("APPROVED", False, NOW, NOW + timedelta(seconds=1), NOW)
    for args in [
        ("SUSPENDED", False, NOW - timedelta(hours=1), None),
        ("APPROVED", True, NOW - timedelta(hours=1), None),
        ("APPROVED", False, NOW + timedelta(hours=1), None),
        ("APPROVED", False, NOW - timedelta(hours=2), NOW),
    ]:
        with pytest.raises(InvalidState):
            check_redeemable(*args, NOW)


def test_listing_expires_at_the_next_boundary():
    soon = NOW + timedelta(seconds=5)
    assert listing_expiry(NOW, 30, [soon, NOW - timedelta(days=1)]) == soon
    assert listing_expiry(NOW, 30, []) == NOW + timedelta(seconds=30)


def test_retirement_rules():
    terms = check_retirement(5, "ETS_COMPLIANCE", "  ", None)
    assert terms.class_i_only and terms.beneficiary is None
    assert not check_retirement(5, "PUBLIC_DONATION", "Red Cross", None).class_i_only
    with pytest.raises(InvalidInput) as exc:
        check_retirement(5, "ECO_DAMAGE_COMPENSATION", None, "  ")
    assert exc.value.field == "reference"
    assert check_retirement(5, "ECO_DAMAGE_COMPENSATION", None, "(2026)沪01民初1号").reference
    for grams in (0, -1, 2**63):
        with pytest.raises(InvalidInput):
            check_retirement(grams, "VOLUNTARY_CANCELLATION", None, None)
    with pytest.raises(InvalidInput):
        check_retirement(5, "TRADING", None, None)
    assert {c.value for c in RetirementChannel} >= {"ETS_COMPLIANCE", "PUBLIC_DONATION"}


def test_certificate_numbers_and_masking():
    numbers = {certificate_number(NOW) for _ in range(500)}
    assert len(numbers) == 500 and all(n.startswith("CR-2026-") and len(n) == 18 for n in numbers)
    # The year is Shanghai's: 17:00 UTC on New Year's Eve is already 2027 there.
    assert certificate_number(datetime(2026, 12, 31, 17, 0, tzinfo=UTC)).startswith("CR-2027-")
    assert certificate_number(datetime(2026, 12, 31, 15, 59, tzinfo=UTC)).startswith("CR-2026-")
    assert mask_person("张三丰") == "张**"
    assert mask_person("Alice Smith") == "A******"
    assert mask_person("李") == "*"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("call 13812345678", "call 138****5678"),
        ("138 1234 5678, 138.1234.5678", "138****5678, 138****5678"),
        ("ID 11010519491231002X", "ID 110***********002X"),
        ("office 6123  4567", "office ******67"),
        ("(2026)沪0115民初123号, room 1203", "(2026)沪0115民初123号, room 1203"),
        ("138 - 1234 - 5678, 138－1234－5678", "138****5678, 138****5678"),
        ("event 2026.11.24, 2026年11月24日", "event 2026.11.24, 2026年11月24日"),
        ("2026-11-24 13812345678", "2026-11-24 138****5678"),
        ("20261124999 x", "202****4999 x"),
        ("（2026）沪0115民初1234567号，电话 13812345678", "（2026）沪0115民初1234567号，电话 138****5678"),
        ("〔2026〕沪检公诉1234567号", "〔2026〕沪检公诉1234567号"),
        ("(2026) 沪01民终1234567号", "(2026) 沪01民终1234567号"),
        ("(2026)手机13812345678号楼", "(2026)手机138****5678号楼"),
    ],
)
def test_long_numbers_in_public_text_show_only_their_ends(text, shown):
    assert mask_numbers(text) == shown

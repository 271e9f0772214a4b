"""Mall tables: merchants, rights, redemptions (vouchers), per-person tallies and buy-backs."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint
from tortoise.models import Model


class MerchantStatus(StrEnum):
    """Merchant lifecycle: PENDING -> APPROVED or REJECTED; APPROVED <-> SUSPENDED."""

    PENDING = "PENDING"
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    SUSPENDED = "SUSPENDED"


class RedemptionStatus(StrEnum):
    """Voucher lifecycle: ISSUED -> USED, CANCELLED (refunded) or EXPIRED (refunded)."""

    ISSUED = "ISSUED"
    USED = "USED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class BuybackStatus(StrEnum):
    """Buy-back lifecycle: PENDING -> SETTLED or REJECTED."""

    PENDING = "PENDING"
    SETTLED = "SETTLED"
    REJECTED = "REJECTED"


class Merchant(Model):
    """An organisation offering rights in the mall, known by its unified social credit code."""

    id = fields.BigIntField(primary_key=True)
    participant_id = fields.BigIntField()
    credit_code = fields.CharField(max_length=18)
    name = fields.CharField(max_length=200)
    contact = fields.CharField(max_length=32)
    status = fields.CharField(max_length=16, default=MerchantStatus.PENDING.value)
    applied_by = fields.CharField(max_length=128)
    reviewed_by = fields.CharField(max_length=128, null=True)
    review_comment = fields.CharField(max_length=1000, null=True)
    reviewed_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "mall_merchant"
        constraints = [
            UniqueConstraint(fields=("credit_code",), name="mall_merchant_code_once"),
            UniqueConstraint(fields=("participant_id",), name="mall_merchant_participant_once"),
        ]


class Right(Model):
    """A good or service offered for points, with stock, a per-person limit and a validity window."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.BigIntField()
    title = fields.CharField(max_length=100)
    description = fields.CharField(max_length=2000, default="")
    category = fields.CharField(max_length=32)
    points_price = fields.BigIntField()
    stock_total = fields.IntField()
    stock_remaining = fields.IntField()
    per_person_limit = fields.IntField(default=1)
    valid_from = fields.DatetimeField()
    valid_until = fields.DatetimeField(null=True)
    min_credit_grade = fields.CharField(max_length=8, null=True)
    paused = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "mall_right"
        indexes = (("merchant_id", "id"), ("category", "id"))
        constraints = [
            CheckConstraint(check="points_price > 0", name="mall_right_price_positive"),
            CheckConstraint(check="stock_remaining >= 0", name="mall_right_stock_not_negative"),
            CheckConstraint(check="per_person_limit >= 1", name="mall_right_limit_positive"),
        ]


class Redemption(Model):
    """Points spent on a right and the voucher issued for it."""

    id = fields.BigIntField(primary_key=True)
    right_id = fields.BigIntField()
    merchant_id = fields.BigIntField()
    participant_id = fields.BigIntField()
    quantity = fields.IntField()
    unit_price = fields.BigIntField()
    points_spent = fields.BigIntField()
    voucher_code = fields.CharField(max_length=16)
    status = fields.CharField(max_length=12, default=RedemptionStatus.ISSUED.value)
    expires_at = fields.DatetimeField(null=True)
    used_at = fields.DatetimeField(null=True)
    closed_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "mall_redemption"
        indexes = (("participant_id", "id"), ("merchant_id", "id"), ("status", "expires_at"))
        constraints = [
            CheckConstraint(check="quantity > 0", name="mall_redemption_quantity_positive"),
            UniqueConstraint(fields=("voucher_code",), name="mall_redemption_voucher_once"),
        ]


class RedemptionTally(Model):
    """How many of one right one person holds now (issued or used), kept for the per-person limit."""

    id = fields.BigIntField(primary_key=True)
    right_id = fields.BigIntField()
    participant_id = fields.BigIntField()
    quantity = fields.IntField(default=0)

    class Meta:
        table = "mall_redemption_tally"
        constraints = [
            CheckConstraint(check="quantity >= 0", name="mall_tally_not_negative"),
            UniqueConstraint(fields=("right_id", "participant_id"), name="mall_tally_once"),
        ]


class Buyback(Model):
    """A merchant request to turn pooled points back into reductions at the rule in force."""

    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.BigIntField()
    participant_id = fields.BigIntField()
    points = fields.BigIntField()
    grams = fields.BigIntField()
    grams_per_point = fields.BigIntField()
    rule_id = fields.BigIntField()
    status = fields.CharField(max_length=12, default=BuybackStatus.PENDING.value)
    requested_by = fields.CharField(max_length=128)
    settled_by = fields.CharField(max_length=128, null=True)
    comment = fields.CharField(max_length=1000, null=True)
    settled_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "mall_buyback"
        indexes = (("merchant_id", "id"),)
        constraints = [
            CheckConstraint(check="points > 0 AND grams > 0", name="mall_buyback_positive"),
        ]

"""Ledger tables: accounts, transfers with their two entries, issuance lots and lot holdings."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint
from tortoise.models import Model


class Asset(StrEnum):
    """The two ledgers: grams of CO2e reductions and carbon points."""

    REDUCTION_GRAMS = "REDUCTION_GRAMS"
    POINTS = "POINTS"


class AccountKind(StrEnum):
    """Holder accounts never go negative; the issuance accounts are where units come from."""

    HOLDER = "holder"
    RESERVE = "reserve"
    RETIRED = "retired"
    BURNED = "burned"
    ISSUANCE = "issuance"


class EntryKind(StrEnum):
    """Why a transfer happened, as clients see it on a ledger entry."""

    ISSUANCE = "ISSUANCE"
    CONVERSION = "CONVERSION"
    REDEMPTION = "REDEMPTION"
    REFUND = "REFUND"
    BUYBACK = "BUYBACK"
    TRANSFER = "TRANSFER"
    RETIREMENT = "RETIREMENT"


class Account(Model):
    """One holder's (or one system role's) balance of one asset."""

    id = fields.BigIntField(primary_key=True)
    asset = fields.CharField(max_length=16)
    kind = fields.CharField(max_length=16, default=AccountKind.HOLDER.value)
    participant_id = fields.BigIntField(null=True)
    code = fields.CharField(max_length=64, null=True, unique=True)
    balance = fields.BigIntField(default=0)
    pending = fields.BigIntField(default=0)

    class Meta:
        table = "ledger_account"
        constraints = [
            UniqueConstraint(fields=("participant_id", "asset"), name="ledger_account_holder_asset"),
            CheckConstraint(
                check="kind = 'issuance' OR (balance >= 0 AND pending >= 0 AND pending <= balance)",
                name="ledger_account_not_negative",
            )
        ]


class Transfer(Model):
    """A movement of `amount` of one asset from the debit account to the credit account."""

    id = fields.BigIntField(primary_key=True)
    asset = fields.CharField(max_length=16)
    kind = fields.CharField(max_length=16)
    debit_account_id = fields.BigIntField()
    credit_account_id = fields.BigIntField()
    amount = fields.BigIntField()
    reference = fields.CharField(max_length=96)
    memo = fields.CharField(max_length=256, default="")
    reverses_id = fields.BigIntField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "ledger_transfer"
        indexes = (("reference",),)
        constraints = [CheckConstraint(check="amount > 0", name="ledger_transfer_positive")]


class Entry(Model):
    """One side of a transfer as its account sees it: signed amount and balance after."""

    id = fields.BigIntField(primary_key=True)
    account_id = fields.BigIntField()
    transfer_id = fields.BigIntField()
    asset = fields.CharField(max_length=16)
    kind = fields.CharField(max_length=16)
    amount = fields.BigIntField()
    balance_after = fields.BigIntField()
    memo = fields.CharField(max_length=256, default="")
    created_at = fields.DatetimeField()

    class Meta:
        table = "ledger_entry"
        indexes = (("account_id", "id"), ("transfer_id",))


class Lot(Model):
    """An issuance lot: a serial block of grams of one source, class and vintage."""

    id = fields.BigIntField(primary_key=True)
    serial_prefix = fields.CharField(max_length=64, unique=True)
    source_type = fields.CharField(max_length=16)  # scenario | project
    source_code = fields.CharField(max_length=64)
    methodology_code = fields.CharField(max_length=64)
    methodology_version = fields.CharField(max_length=32)
    methodology_class = fields.CharField(max_length=4)  # I | II
    vintage = fields.IntField()
    issued_grams = fields.BigIntField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "ledger_lot"
        constraints = [CheckConstraint(check="issued_grams > 0", name="ledger_lot_positive")]


class LotHolding(Model):
    """How many grams of one lot one account holds now."""

    id = fields.BigIntField(primary_key=True)
    account_id = fields.BigIntField()
    lot_id = fields.BigIntField()
    balance = fields.BigIntField(default=0)

    class Meta:
        table = "ledger_lot_holding"
        indexes = (("lot_id",),)
        constraints = [
            CheckConstraint(check="balance >= 0", name="ledger_lot_holding_not_negative"),
            UniqueConstraint(fields=("account_id", "lot_id"), name="ledger_lot_holding_account_lot"),
        ]


class TransferLot(Model):
    """Which lots a grams transfer drew on, and how much of each."""

    id = fields.BigIntField(primary_key=True)
    transfer_id = fields.BigIntField()
    lot_id = fields.BigIntField()
    amount = fields.BigIntField()

    class Meta:
        table = "ledger_transfer_lot"
        indexes = (("transfer_id",), ("lot_id",))

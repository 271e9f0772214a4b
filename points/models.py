"""Points tables: conversion rules and conversions, behavior scenarios and experience, growth
levels and crossings, credit standing with its snapshots, misconduct flags."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint
from tortoise.models import Model


class MisconductKind(StrEnum):
    """What operations found wrong with a participant (Art. 24, 25)."""

    FRAUDULENT_RECORDS = "FRAUDULENT_RECORDS"
    VOUCHER_ABUSE = "VOUCHER_ABUSE"
    OTHER = "OTHER"


class ConversionRule(Model):
    """One version of the conversion rate: grams per point from effective_from on."""

    id = fields.BigIntField(primary_key=True)
    grams_per_point = fields.BigIntField()
    effective_from = fields.DatetimeField()
    set_by = fields.CharField(max_length=128)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "points_conversion_rule"
        indexes = (("effective_from", "id"),)
        constraints = [
            CheckConstraint(check="grams_per_point > 0", name="points_rule_rate_positive")
        ]


class Conversion(Model):
    """A resident turning grams into points at the rule in force (Art. 16)."""

    id = fields.BigIntField(primary_key=True)
    participant_id = fields.BigIntField()
    rule_id = fields.BigIntField()
    grams_per_point = fields.BigIntField()
    asked_grams = fields.BigIntField()
    grams = fields.BigIntField()
    points = fields.BigIntField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "points_conversion"
        indexes = (("participant_id", "id"),)
        constraints = [
            CheckConstraint(
                check="points > 0 AND grams = points * grams_per_point AND grams <= asked_grams",
                name="points_conversion_whole_points",
            )
        ]


class BehaviorScenario(Model):
    """A behavior scenario run by an operator organisation, yielding experience (Art. 10)."""

    id = fields.BigIntField(primary_key=True)
    code = fields.CharField(max_length=64, unique=True)
    name = fields.CharField(max_length=200)
    operator_participant_id = fields.BigIntField()
    operator_org = fields.CharField(max_length=18)
    defined_by = fields.CharField(max_length=128)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "points_behavior_scenario"


class BehaviorRule(Model):
    """Experience per event of one behavior and the most a person earns from it in a day."""

    id = fields.BigIntField(primary_key=True)
    scenario_id = fields.BigIntField()
    behavior = fields.CharField(max_length=64)
    experience = fields.IntField()
    daily_cap = fields.IntField()

    class Meta:
        table = "points_behavior_rule"
        constraints = [
            CheckConstraint(
                check="experience > 0 AND daily_cap > 0", name="points_behavior_rule_positive"
            ),
            UniqueConstraint(fields=("scenario_id", "behavior"), name="points_behavior_rule_once"),
        ]


class BehaviorEvent(Model):
    """One behavior reported by an operator: experience computed and earned under the cap."""

    id = fields.BigIntField(primary_key=True)
    scenario_id = fields.BigIntField()
    external_ref = fields.CharField(max_length=128)
    participant_id = fields.BigIntField()
    behavior = fields.CharField(max_length=64)
    computed_experience = fields.IntField()
    earned_experience = fields.IntField()
    occurred_at = fields.DatetimeField()
    day = fields.DateField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "points_behavior_event"
        indexes = (("participant_id", "id"),)
        constraints = [
            CheckConstraint(
                check="earned_experience >= 0 AND earned_experience <= computed_experience",
                name="points_event_earned_within_computed",
            ),
            UniqueConstraint(fields=("scenario_id", "external_ref"), name="points_event_once"),
        ]


class BehaviorDailyUsage(Model):
    """Experience a person earned from one behavior of one scenario on one Asia/Shanghai day."""

    id = fields.BigIntField(primary_key=True)
    scenario_id = fields.BigIntField()
    behavior = fields.CharField(max_length=64)
    participant_id = fields.BigIntField()
    day = fields.DateField()
    experience = fields.IntField(default=0)

    class Meta:
        table = "points_behavior_daily_usage"
        constraints = [
            # Person and day before behavior: a batch reads the usage of its people and days for
            # every behavior of the scenario.
            UniqueConstraint(
                fields=("scenario_id", "participant_id", "day", "behavior"),
                name="points_behavior_daily_once",
            )
        ]


class Experience(Model):
    """A participant lifetime experience: non-transferable, never convertible."""

    id = fields.BigIntField(primary_key=True)
    participant_id = fields.BigIntField(unique=True)
    total = fields.BigIntField(default=0)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "points_experience"
        # Lifetime experience stops at the largest GraphQL Int (points.rules.MAX_EXPERIENCE).
        constraints = [CheckConstraint(check="total >= 0 AND total <= 2147483647",
                                       name="points_experience_within_int")]


class GrowthLevel(Model):
    """One step of the growth table: reached at min_experience of lifetime experience."""

    id = fields.BigIntField(primary_key=True)
    code = fields.CharField(max_length=32, unique=True)
    name = fields.CharField(max_length=64)
    min_experience = fields.BigIntField(unique=True)

    class Meta:
        table = "points_growth_level"
        constraints = [
            CheckConstraint(check="min_experience >= 0", name="points_level_threshold_not_negative")
        ]


class LevelCrossing(Model):
    """A participant reaching another growth level, with when it happened."""

    id = fields.BigIntField(primary_key=True)
    participant_id = fields.BigIntField()
    from_code = fields.CharField(max_length=32, null=True)
    to_code = fields.CharField(max_length=32)
    experience = fields.BigIntField()
    crossed_at = fields.DatetimeField()

    class Meta:
        table = "points_level_crossing"
        indexes = (("participant_id", "id"),)


class CreditStanding(Model):
    """The current credit standing of a participant and the balances and experience it was
    computed at."""

    id = fields.BigIntField(primary_key=True)
    participant_id = fields.BigIntField(unique=True)
    score = fields.IntField()
    grade = fields.CharField(max_length=8)
    factors = fields.JSONField()
    grams_mark = fields.BigIntField()
    points_mark = fields.BigIntField()
    experience_mark = fields.BigIntField(default=0)
    updated_at = fields.DatetimeField()

    class Meta:
        table = "points_credit_standing"
        constraints = [
            CheckConstraint(check="score >= 0 AND score <= 1000", name="points_credit_score_range")
        ]


class CreditSnapshot(Model):
    """A past credit standing, kept whenever the score or grade changed."""

    id = fields.BigIntField(primary_key=True)
    participant_id = fields.BigIntField()
    score = fields.IntField()
    grade = fields.CharField(max_length=8)
    factors = fields.JSONField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "points_credit_snapshot"
        indexes = (("participant_id", "id"),)


class MisconductFlag(Model):
    """A misconduct finding by operations, active until lifted, with both reasons."""

    id = fields.BigIntField(primary_key=True)
    participant_id = fields.BigIntField()
    kind = fields.CharField(max_length=24)
    reason = fields.CharField(max_length=500)
    recorded_by = fields.CharField(max_length=128)
    recorded_at = fields.DatetimeField()
    lifted_by = fields.CharField(max_length=128, null=True)
    lift_reason = fields.CharField(max_length=500, null=True)
    lifted_at = fields.DatetimeField(null=True)

    class Meta:
        table = "points_misconduct_flag"
        indexes = (("participant_id", "lifted_at"),)


class VoucherCancellation(Model):
    """A resident cancelling a redeemed voucher, noted for the credit standing."""

    id = fields.BigIntField(primary_key=True)
    participant_id = fields.BigIntField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "points_voucher_cancellation"
        indexes = (("participant_id", "created_at"),)

"""Registry tables: methodologies, scenarios and their assessments, publicity calendars,
resident authorizations, operator records, issuances and retirements."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint
from tortoise.models import Model


class MethodologyKind(StrEnum):
    """What a methodology quantifies."""

    PROJECT = "PROJECT"
    SCENARIO = "SCENARIO"


class MethodologyClass(StrEnum):
    """Art. 9: class I (may serve ETS compliance) or class II."""

    I = "I"  # noqa: E741
    II = "II"


class MethodologyStatus(StrEnum):
    """Methodology lifecycle (Art. 11)."""

    SUBMITTED = "SUBMITTED"
    PUBLIC_COMMENT = "PUBLIC_COMMENT"
    PUBLISHED = "PUBLISHED"
    REJECTED = "REJECTED"
    SUSPENDED = "SUSPENDED"


class ScenarioStatus(StrEnum):
    """Scenario lifecycle (Art. 13)."""

    SUBMITTED = "SUBMITTED"
    PUBLICITY = "PUBLICITY"
    PUBLISHED = "PUBLISHED"
    REJECTED = "REJECTED"
    SUSPENDED = "SUSPENDED"


class RetirementChannel(StrEnum):
    """Art. 17 channels through which reductions are used and cancelled."""

    VOLUNTARY_CANCELLATION = "VOLUNTARY_CANCELLATION"
    PUBLIC_DONATION = "PUBLIC_DONATION"
    OPERATIONS_NEUTRALITY = "OPERATIONS_NEUTRALITY"
    EVENT_NEUTRALITY = "EVENT_NEUTRALITY"
    ECO_DAMAGE_COMPENSATION = "ECO_DAMAGE_COMPENSATION"
    ETS_COMPLIANCE = "ETS_COMPLIANCE"


class Methodology(Model):
    """A versioned quantification method (scenario methodologies carry their factor and cap)."""

    id = fields.BigIntField(primary_key=True)
    code = fields.CharField(max_length=64)
    name = fields.CharField(max_length=200)
    kind = fields.CharField(max_length=16)
    methodology_class = fields.CharField(max_length=4)
    version = fields.CharField(max_length=32)
    activity_unit = fields.CharField(max_length=32, null=True)
    grams_per_unit = fields.BigIntField(null=True)
    daily_cap_grams = fields.BigIntField(null=True)
    status = fields.CharField(max_length=16, default=MethodologyStatus.SUBMITTED.value)
    submitted_by = fields.CharField(max_length=128)
    submitter_org = fields.CharField(max_length=18, null=True)
    assessed_by = fields.CharField(max_length=128, null=True)
    assessment_comment = fields.CharField(max_length=1000, null=True)
    assessed_at = fields.DatetimeField(null=True)
    published_by = fields.CharField(max_length=128, null=True)
    published_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "registry_methodology"
        constraints = [
            CheckConstraint(
                check="grams_per_unit IS NULL OR grams_per_unit > 0",
                name="registry_methodology_factor_positive",
            ),
            UniqueConstraint(fields=("code", "version"), name="registry_methodology_code_version"),
        ]


class Scenario(Model):
    """A reduction scenario run by an operator on a published scenario methodology."""

    id = fields.BigIntField(primary_key=True)
    code = fields.CharField(max_length=64, unique=True)
    name = fields.CharField(max_length=200)
    methodology_id = fields.BigIntField()
    operator_participant_id = fields.BigIntField()
    operator_org = fields.CharField(max_length=18)
    no_double_counting_commitment = fields.BooleanField()
    status = fields.CharField(max_length=16, default=ScenarioStatus.SUBMITTED.value)
    publicity_starts_on = fields.DateField(null=True)
    publicity_ends_on = fields.DateField(null=True)
    publicity_set_by = fields.CharField(max_length=128, null=True)
    published_by = fields.CharField(max_length=128, null=True)
    published_at = fields.DatetimeField(null=True)
    issued_through = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "registry_scenario"


class ScenarioAssessment(Model):
    """One assessing body decision on a scenario (center and exchange both assess)."""

    id = fields.BigIntField(primary_key=True)
    scenario_id = fields.BigIntField()
    body = fields.CharField(max_length=16)  # center | exchange
    approve = fields.BooleanField()
    comment = fields.CharField(max_length=1000, null=True)
    assessed_by = fields.CharField(max_length=128)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "registry_scenario_assessment"
        constraints = [
            UniqueConstraint(fields=("scenario_id", "body"), name="registry_assessment_once")
        ]


class HolidayCalendar(Model):
    """The public holidays of a year and make-up working days, loaded by the regulator."""

    id = fields.BigIntField(primary_key=True)
    year = fields.IntField(unique=True)
    holidays = fields.JSONField()
    workdays = fields.JSONField()
    loaded_by = fields.CharField(max_length=128)
    loaded_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "registry_holiday_calendar"


class ScenarioSuspension(Model):
    """One time a scenario was suspended.

    From suspended_at until reinstated_at (None while it still is): records that occurred in it
    earn nothing, whenever they are sent.
    """

    id = fields.BigIntField(primary_key=True)
    scenario_id = fields.BigIntField()
    suspended_at = fields.DatetimeField()
    reinstated_at = fields.DatetimeField(null=True)

    class Meta:
        table = "registry_scenario_suspension"
        indexes = (("scenario_id", "id"),)


class ScenarioAuthorization(Model):
    """A resident consent to one scenario, active from granted_at until revoked_at."""

    id = fields.BigIntField(primary_key=True)
    participant_id = fields.BigIntField()
    scenario_code = fields.CharField(max_length=64)
    granted_at = fields.DatetimeField()
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "registry_scenario_authorization"
        indexes = (("participant_id", "scenario_code"), ("scenario_code", "participant_id"))


class ScenarioRecord(Model):
    """One operator activity record: what it computed and what it earned under the daily cap.

    A record earns its computed grams until its issuance settles the daily cap (`registry.
    issuance`): the records of a person's day earn, in the order they were accepted (id order),
    what is left under the cap. The created_at index bounds what an issuance reads: a record
    is never created before its scenario, nor before it occurred.
    """

    id = fields.BigIntField(primary_key=True)
    scenario_id = fields.BigIntField()
    external_ref = fields.CharField(max_length=128)
    participant_id = fields.BigIntField()
    quantity = fields.FloatField()
    computed_grams = fields.BigIntField()
    earned_grams = fields.BigIntField()
    occurred_at = fields.DatetimeField()
    day = fields.DateField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "registry_scenario_record"
        # created_at is indexed by migration registry/0004: BRIN on PostgreSQL, b-tree on SQLite.
        constraints = [
            CheckConstraint(
                check="earned_grams >= 0 AND earned_grams <= computed_grams",
                name="registry_record_earned_within_computed",
            ),
            UniqueConstraint(fields=("scenario_id", "external_ref"), name="registry_record_once"),
        ]


class Issuance(Model):
    """One issuance of the accepted records of a scenario up to period_end, as one lot."""

    id = fields.BigIntField(primary_key=True)
    scenario_id = fields.BigIntField()
    lot_id = fields.BigIntField(unique=True)
    serial_prefix = fields.CharField(max_length=64, unique=True)
    period_end = fields.DatetimeField()
    total_grams = fields.BigIntField()
    recipients = fields.IntField()
    records = fields.IntField()
    methodology_code = fields.CharField(max_length=64)
    methodology_version = fields.CharField(max_length=32)
    methodology_class = fields.CharField(max_length=4)
    grams_per_unit = fields.BigIntField()
    issued_by = fields.CharField(max_length=128)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "registry_issuance"
        indexes = (("scenario_id", "id"),)  # a scenario's issuances, newest first


class Retirement(Model):
    """A cancellation certificate: who retired how many grams, through which channel, for whom."""

    id = fields.BigIntField(primary_key=True)
    certificate_number = fields.CharField(max_length=40, unique=True)
    participant_id = fields.BigIntField()
    grams = fields.BigIntField()
    channel = fields.CharField(max_length=32)
    beneficiary = fields.CharField(max_length=200, null=True)
    reference = fields.CharField(max_length=200, null=True)
    transfer_id = fields.BigIntField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "registry_retirement"
        constraints = [CheckConstraint(check="grams > 0", name="registry_retirement_positive")]

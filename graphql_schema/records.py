"""Scenario records from operators, their issuance to residents, and tracing issued lots."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.types import Info

from graphql_schema.errors import UserError, attempt
from graphql_schema.ids import encode_id
from graphql_schema.pagination import Connection, build_connection, decode_cursor, page_size
from graphql_schema.permissions import Center, ScenarioOperator, roles
from graphql_schema.scalars import BigInt
from registry import issuance as issuance_service
from registry import records as records_service
from registry import traceability
from registry.models import Issuance

IssuanceReaders = roles("center", "exchange", "regulator", "scenario_operator")
Staff = roles("center", "exchange", "regulator")


@strawberry.input(description="One activity record of a person in a scenario.")
class ScenarioRecordInput:
    """subject: the person's identity-provider subject; quantity in the methodology's unit."""

    subject: str
    quantity: float
    occurred_at: datetime
    external_ref: str


@strawberry.input
class SubmitScenarioRecordsInput:
    """Up to 1,000 records of one scenario."""

    scenario_code: str
    records: list[ScenarioRecordInput]


@strawberry.type
class RecordRejection:
    """An item that was not counted: its index in the batch, a code and a message."""

    index: int
    code: str
    message: str


@strawberry.type
class SubmitScenarioRecordsPayload:
    """Per-item answer: accepted, duplicates (externalRef already counted) and rejected items."""

    accepted: int
    duplicates: int
    rejected: list[RecordRejection]
    user_errors: list[UserError]


@strawberry.input
class IssueScenarioReductionsInput:
    """Issue every accepted, unissued record of the scenario up to periodEnd."""

    scenario_code: str
    period_end: datetime
    idempotency_key: str


@strawberry.type
class ScenarioIssuance:
    """One issuance: a serial block of grams credited to residents, with its methodology."""

    id: strawberry.ID
    serial_prefix: str
    scenario_code: str
    period_end: datetime
    total_grams: BigInt
    recipients: int
    records: int
    methodology_code: str
    methodology_version: str
    methodology_class: str
    grams_per_unit: BigInt
    created_at: datetime

    @classmethod
    def from_row(cls, row: Issuance, scenario_code: str) -> ScenarioIssuance:
        """The GraphQL view of an issuance row."""
        return cls(
            id=strawberry.ID(encode_id("ScenarioIssuance", row.id)),
            serial_prefix=row.serial_prefix,
            scenario_code=scenario_code,
            period_end=row.period_end,
            total_grams=row.total_grams,
            recipients=row.recipients,
            records=row.records,
            methodology_code=row.methodology_code,
            methodology_version=row.methodology_version,
            methodology_class=row.methodology_class,
            grams_per_unit=row.grams_per_unit,
            created_at=row.created_at,
        )


@strawberry.type
class IssueScenarioReductionsPayload:
    """The issuance made (or the first one, on a retry with the same key)."""

    issuance: ScenarioIssuance | None
    user_errors: list[UserError]


@strawberry.type
class LotHoldingSummary:
    """Grams of a lot held by one kind of holder now (individual, organisation, reserve, retired)."""

    holder_kind: str
    grams: BigInt
    accounts: int


@strawberry.type
class LotTrace:
    """An issued lot and where its grams are now; holdings add up to issuedGrams."""

    serial_prefix: str
    source_type: str
    source_code: str
    methodology_code: str
    methodology_version: str
    methodology_class: str
    vintage: int
    issued_grams: BigInt
    holdings: list[LotHoldingSummary]


@strawberry.type
class Mutation:
    """Operator records and their issuance."""

    @strawberry.mutation(permission_classes=[ScenarioOperator])
    async def submit_scenario_records(
        self, info: Info, input: SubmitScenarioRecordsInput
    ) -> SubmitScenarioRecordsPayload:
        """Apply a batch of records of the caller's own published scenario."""
        principal = info.context.caller()
        records = [
            records_service.RecordInput(r.subject, r.quantity, r.occurred_at, r.external_ref)
            for r in input.records
        ]

        async def run() -> SubmitScenarioRecordsPayload:
            outcome = await records_service.submit_scenario_records(
                principal, input.scenario_code, records
            )
            return SubmitScenarioRecordsPayload(
                accepted=outcome.accepted,
                duplicates=outcome.duplicates,
                rejected=[RecordRejection(index=r.index, code=r.code, message=r.message)
                          for r in outcome.rejected],
                user_errors=[],
            )

        return await attempt(
            run,
            lambda e: SubmitScenarioRecordsPayload(
                accepted=0, duplicates=0, rejected=[], user_errors=[e]
            ),
        )

    @strawberry.mutation(permission_classes=[Center])
    async def issue_scenario_reductions(
        self, info: Info, input: IssueScenarioReductionsInput
    ) -> IssueScenarioReductionsPayload:
        """Issue a scenario's accepted records up to periodEnd as one lot (idempotent by key)."""
        principal = info.context.caller()

        async def run() -> IssueScenarioReductionsPayload:
            done = await issuance_service.issue_scenario_reductions(
                principal, input.scenario_code, input.period_end, input.idempotency_key
            )
            return IssueScenarioReductionsPayload(
                issuance=ScenarioIssuance.from_row(done.issuance, done.scenario_code),
                user_errors=[],
            )

        return await attempt(
            run, lambda e: IssueScenarioReductionsPayload(issuance=None, user_errors=[e])
        )


@strawberry.type
class Query:
    """Issuances of a scenario and the trace of a lot."""

    @strawberry.field(permission_classes=[IssuanceReaders])
    async def scenario_issuances(
        self, info: Info, scenario_code: str, first: int = 20, after: str | None = None
    ) -> Connection[ScenarioIssuance]:
        """A scenario's issuances, newest first (staff, or the scenario's own operator)."""
        size = page_size(first)
        kind = f"issuance-{scenario_code}"  # one scenario's cursor means nothing in another's list
        rows = await traceability.scenario_issuances(
            info.context.caller(), scenario_code, size, decode_cursor(kind, after)
        )
        return build_connection(
            kind, rows, size, lambda r: r.id, lambda r: ScenarioIssuance.from_row(r, scenario_code)
        )

    @strawberry.field(permission_classes=[Staff])
    async def lot_trace(self, info: Info, serial_prefix: str) -> LotTrace:
        """Where the grams of one issued lot are now, by kind of holder."""
        trace = await traceability.trace_lot(info.context.caller(), serial_prefix)
        lot = trace.lot
        return LotTrace(
            serial_prefix=lot.serial_prefix,
            source_type=lot.source_type,
            source_code=lot.source_code,
            methodology_code=lot.methodology_code,
            methodology_version=lot.methodology_version,
            methodology_class=lot.methodology_class,
            vintage=lot.vintage,
            issued_grams=lot.issued_grams,
            holdings=[LotHoldingSummary(holder_kind=h.holder_kind, grams=h.grams, accounts=h.accounts)
                      for h in trace.holdings],
        )

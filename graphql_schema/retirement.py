"""Retirement (Art. 17): retireReductions for any holder, and the public certificate lookup."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.types import Info

from app.errors import NotFound
from graphql_schema.errors import UserError, attempt
from graphql_schema.ids import encode_id
from graphql_schema.permissions import SignedIn
from graphql_schema.scalars import BigInt
from registry import models as m
from registry import retirement as service
from registry.retirement import Certificate as CertificateView

RetirementChannel = strawberry.enum(m.RetirementChannel, name="RetirementChannel")


@strawberry.type
class RetiredLot:
    """Grams of one issuance lot a retirement drew on."""

    serial_prefix: str
    source_type: str
    source_code: str
    methodology_code: str
    methodology_class: str
    vintage: int
    grams: BigInt


def _lots(view: CertificateView) -> list[RetiredLot]:
    return [RetiredLot(**lot.__dict__) for lot in view.lots]


@strawberry.type
class Retirement:
    """A retirement as its holder sees it: the certificate and the lots drawn on."""

    id: strawberry.ID
    grams: BigInt
    channel: RetirementChannel
    beneficiary: str | None
    reference: str | None
    certificate_number: str
    created_at: datetime
    lots: list[RetiredLot]

    @classmethod
    def of(cls, view: CertificateView) -> Retirement:
        """The holder's view of a certificate."""
        row = view.retirement
        return cls(
            id=strawberry.ID(encode_id("Retirement", row.id)),
            grams=row.grams,
            channel=m.RetirementChannel(row.channel),
            beneficiary=row.beneficiary,
            reference=row.reference,
            certificate_number=row.certificate_number,
            created_at=row.created_at,
            lots=_lots(view),
        )


@strawberry.type
class RetirementCertificate:
    """A retirement as anyone may look it up: an individual holder and beneficiary masked."""

    certificate_number: str
    grams: BigInt
    channel: RetirementChannel
    holder_name: str
    beneficiary: str | None
    reference: str | None
    created_at: datetime
    lots: list[RetiredLot]

    @classmethod
    def of(cls, view: CertificateView) -> RetirementCertificate:
        """The public view of a certificate."""
        row = view.retirement
        return cls(
            certificate_number=row.certificate_number,
            grams=row.grams,
            channel=m.RetirementChannel(row.channel),
            holder_name=view.public_holder_name,
            beneficiary=view.public_beneficiary,
            reference=view.public_reference,
            created_at=row.created_at,
            lots=_lots(view),
        )


@strawberry.input
class RetireReductionsInput:
    """Grams to retire, the Art. 17 channel, for whom, and the legal reference when required."""

    grams: BigInt
    channel: RetirementChannel
    beneficiary: str | None = None
    reference: str | None = None
    idempotency_key: str


@strawberry.type
class RetireReductionsPayload:
    """The retirement and its certificate, or why not."""

    retirement: Retirement | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class Query:
    """The public certificate lookup."""

    @strawberry.field(description="A retirement certificate by its number; no token needed.")
    async def retirement_certificate(self, number: str) -> RetirementCertificate | None:
        """The certificate, or null when no retirement has this number."""
        try:
            view = await service.find_certificate(number)
        except NotFound:
            return None
        return RetirementCertificate.of(view)


@strawberry.type
class Mutation:
    """Retiring reductions."""

    @strawberry.mutation(permission_classes=[SignedIn])
    async def retire_reductions(self, info: Info, input: RetireReductionsInput) -> RetireReductionsPayload:
        """Any holder (resident or organisation) retires reductions; a certificate is issued."""
        principal = info.context.caller()

        async def run() -> RetireReductionsPayload:
            row = await service.retire(
                principal,
                input.grams,
                input.channel.value,
                input.beneficiary,
                input.reference,
                input.idempotency_key,
            )
            return RetireReductionsPayload(retirement=Retirement.of(await service.certificate(row)))

        return await attempt(run, lambda e: RetireReductionsPayload(user_errors=[e]))

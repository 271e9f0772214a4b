"""Retirement (cancellation, Art. 17): any holder uses reductions up through a channel, for good.

The grams leave the holder's lots (oldest first; class I lots only for ETS compliance) for
GRAMS_RETIRED in one RETIREMENT transfer, together with the certificate and the idempotency
claim. The certificate names the lots drawn on (the transfer's TransferLot rows), so every
retired gram traces back to its issuance. Anyone may look a certificate up by its number; an
individual's name is masked there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.auth import ORG_ROLES, Principal
from app.errors import Forbidden, NotEligible, NotFound
from app.events import account_changed
from app.idempotency import claim
from app.ledger.accounts import SystemAccount, holder_account_id, system_account_id
from app.ledger.models import Asset, EntryKind, Lot, TransferLot
from app.ledger.posting import Posting, post
from app.participants import Participant, organisation_id, resident_id
from registry.models import Retirement, RetirementChannel
from registry.retirement_rules import (
    certificate_number,
    check_retirement,
    mask_numbers,
    mask_person,
    normalise_certificate_number,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrawnLot:
    """How many grams of one issuance lot a retirement used."""

    serial_prefix: str
    source_type: str
    source_code: str
    methodology_code: str
    methodology_class: str
    vintage: int
    grams: int


@dataclass(frozen=True)
class Certificate:
    """A retirement as its certificate shows it."""

    retirement: Retirement
    holder_name: str
    holder_is_individual: bool
    lots: list[DrawnLot]

    @property
    def public_beneficiary(self) -> str | None:
        """The beneficiary as the public sees it: an individual holder's masked; an organisation's
        as given, but for the middle of any phone or ID number in it (it may name a person)."""
        name = self.retirement.beneficiary
        if name is None:
            return None
        return mask_person(name) if self.holder_is_individual else mask_numbers(name)

    @property
    def public_reference(self) -> str | None:
        """The reference as the public sees it: the middle of each phone or ID number in it
        hidden, court or procuratorate document numbers as written."""
        reference = self.retirement.reference
        return None if reference is None else mask_numbers(reference)

    @property
    def public_holder_name(self) -> str:
        """The holder's name as the public sees it."""
        return mask_person(self.holder_name) if self.holder_is_individual else self.holder_name


def _acts_for_org(principal: Principal) -> bool:
    """True when the caller retires for its organisation, not as a resident."""
    return bool(principal.org) and principal.has(*ORG_ROLES)


async def _holder(principal: Principal) -> int:
    """The participant retiring: an organisation for organisation roles, else the resident."""
    if _acts_for_org(principal) and principal.org:
        return await organisation_id(principal.org)
    if principal.has("resident"):
        return await resident_id(principal)
    raise Forbidden("Only a holder of reductions (a resident or an organisation) retires them.")


async def retire(
    principal: Principal,
    grams: int,
    channel: str,
    beneficiary: str | None,
    reference: str | None,
    idempotency_key: str,
) -> Retirement:
    """Retire `grams` of the caller's reductions through an Art. 17 channel; a certificate is issued."""
    terms = check_retirement(grams, channel, beneficiary, reference)
    holder = await _holder(principal)
    account = await holder_account_id(holder, Asset.REDUCTION_GRAMS)
    retired = await system_account_id(SystemAccount.GRAMS_RETIRED)
    now = datetime.now(UTC)
    payload = {
        "grams": terms.grams,
        "channel": terms.channel.value,
        "beneficiary": terms.beneficiary,
        "reference": terms.reference,
    }
    for _ in range(3):
        number = certificate_number(now)
        try:
            async with in_transaction() as conn:
                claimed = await claim(f"retire:{holder}", idempotency_key, payload, conn)
                if claimed.replay:
                    return await Retirement.get(id=int(claimed.result["retirement_id"])).using_db(conn)
                if terms.channel == RetirementChannel.ETS_COMPLIANCE and not _acts_for_org(principal):
                    # Art. 17: class I reductions go to allowance surrender by the entities the
                    # carbon market covers. (After the claim: a retry of an earlier one replays.)
                    raise NotEligible(
                        "Only an organisation covered by the carbon market surrenders reductions"
                        " for compliance.", "channel")
                [posted] = await post(
                    conn,
                    [
                        Posting(
                            Asset.REDUCTION_GRAMS, account, retired, terms.grams, EntryKind.RETIREMENT,
                            f"retirement:{number}", f"{terms.channel.value} {number}",
                            lot_class="I" if terms.class_i_only else None,
                        )
                    ],
                    now=now,
                )
                row = await Retirement.create(
                    certificate_number=number,
                    participant_id=holder,
                    grams=terms.grams,
                    channel=terms.channel.value,
                    beneficiary=terms.beneficiary,
                    reference=terms.reference,
                    transfer_id=posted.transfer_id,
                    using_db=conn,
                )
                await claimed.complete({"retirement_id": row.id}, conn)
        except IntegrityError:
            if await Retirement.filter(certificate_number=number).exists():
                continue  # a certificate number drawn twice: draw again
            raise
        log.info("retirement %s: %s g via %s", number, terms.grams, terms.channel.value)
        await account_changed([holder])
        return row
    raise RuntimeError("could not draw a free certificate number")


async def _lots(transfer_id: int) -> list[DrawnLot]:
    drawn = await (
        TransferLot.filter(transfer_id=transfer_id).order_by("lot_id").values_list("lot_id", "amount")
    )
    lots = {lot.id: lot for lot in await Lot.filter(id__in=[lot_id for lot_id, _ in drawn])}
    return [
        DrawnLot(
            serial_prefix=lots[lot_id].serial_prefix,
            source_type=lots[lot_id].source_type,
            source_code=lots[lot_id].source_code,
            methodology_code=lots[lot_id].methodology_code,
            methodology_class=lots[lot_id].methodology_class,
            vintage=lots[lot_id].vintage,
            grams=amount,
        )
        for lot_id, amount in drawn
    ]


async def certificate(row: Retirement) -> Certificate:
    """The certificate of a retirement: holder and the lots drawn on."""
    holder = await Participant.filter(id=row.participant_id).first()
    return Certificate(
        retirement=row,
        holder_name=holder.display_name if holder else "",
        holder_is_individual=holder is not None and holder.kind == "individual",
        lots=await _lots(row.transfer_id),
    )


async def find_certificate(number: str) -> Certificate:
    """A certificate by its number (public); NOT_FOUND when there is none."""
    row = await Retirement.filter(certificate_number=normalise_certificate_number(number)[:40]).first()
    if row is None:
        raise NotFound("No retirement has this certificate number.", "number")
    return await certificate(row)

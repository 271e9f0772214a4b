"""Pure rules of retirement (Art. 17): channel requirements, certificate numbers, masking."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from app.errors import InvalidInput
from app.units import BIGINT_MAX
from registry.models import RetirementChannel
from registry.rules import shanghai_day

CERTIFICATE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CERTIFICATE_RANDOM_CHARS = 10
MAX_TEXT = 200


@dataclass(frozen=True)
class RetirementTerms:
    """Validated terms of a retirement."""

    grams: int
    channel: RetirementChannel
    beneficiary: str | None
    reference: str | None

    @property
    def class_i_only(self) -> bool:
        """ETS compliance draws on class I reductions only."""
        return self.channel == RetirementChannel.ETS_COMPLIANCE


def check_retirement(
    grams: int, channel: str, beneficiary: str | None, reference: str | None
) -> RetirementTerms:
    """Validate a retirement request, naming the field at fault."""
    if not 0 < grams <= BIGINT_MAX:
        raise InvalidInput("grams must be a whole number above 0.", "grams")
    try:
        chosen = RetirementChannel(channel)
    except ValueError:
        raise InvalidInput("channel is not an Art. 17 retirement channel.", "channel") from None
    who = (beneficiary or "").strip() or None
    if who is not None and len(who) > MAX_TEXT:
        raise InvalidInput(f"beneficiary must be at most {MAX_TEXT} characters.", "beneficiary")
    ref = (reference or "").strip() or None
    if ref is not None and len(ref) > MAX_TEXT:
        raise InvalidInput(f"reference must be at most {MAX_TEXT} characters.", "reference")
    if chosen == RetirementChannel.ECO_DAMAGE_COMPENSATION and ref is None:
        raise InvalidInput(
            "Ecological-damage compensation needs the court or procuratorate document number.",
            "reference",
        )
    return RetirementTerms(grams, chosen, who, ref)


def certificate_number(when: datetime) -> str:
    """A new certificate number: CR-<Shanghai year>-<10 random characters>, unguessable and
    unique in practice."""
    tail = "".join(secrets.choice(CERTIFICATE_ALPHABET) for _ in range(CERTIFICATE_RANDOM_CHARS))
    return f"CR-{shanghai_day(when).year}-{tail}"


def normalise_certificate_number(text: str) -> str:
    """A typed certificate number as stored (blanks removed, upper case)."""
    return text.strip().upper()


# A run of 7 or more digits (up to three spaces, dots, slashes or dashes of any width between
# them allowed), an ID number's final X (right after it) included: a phone number, an ID or
# passport number, a bank card. A date written with separators (2026.11.24) is not one.
_SEPARATORS = r"[\s./\-\u2010-\u2015\uff0d]{0,3}"
_NUMBER = re.compile(rf"\d(?:{_SEPARATORS}\d){{6,}}(?:[Xx](?![A-Za-z]))?")
# What stays as written: dates, and court or procuratorate document numbers such as
# (2026)沪01民终1234567号 or 〔2026〕沪检公诉123号 (a year in brackets, a court or office, a case
# type, a number, 号), whose case number the public must be able to read.
_KEPT = re.compile(
    r"((?<!\d)(?:19|20)\d\d[.\-/年](?:1[0-2]|0?[1-9])[.\-/月](?:[12]\d|3[01]|0?[1-9])(?!\d)日?"
    r"|[(（〔]\d{4}[)）〕]\s?[\u4e00-\u9fff]{1,6}?\d{0,4}[民刑行执检诉赔再初终审监公益]{1,4}\d+号)")


def mask_numbers(text: str) -> str:
    """Text for public display with every long number hidden but its ends: 138****5678, and of
    a shorter one (a landline) its last two digits only; dates and document numbers stay."""
    parts = _KEPT.split(text)  # what stays at the odd places
    return "".join(part if i % 2 else _NUMBER.sub(_masked_number, part) for i, part in enumerate(parts))


def _masked_number(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group()[:-1]) + match.group()[-1]
    if len(digits) >= 11:
        return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]
    return "*" * (len(digits) - 2) + digits[-2:]


def mask_person(name: str) -> str:
    """An individual's name for public display: the first character, the rest hidden."""
    name = name.strip()
    if len(name) <= 1:
        return "*"
    return name[0] + "*" * min(len(name) - 1, 6)

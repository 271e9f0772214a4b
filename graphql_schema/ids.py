"""Opaque global IDs ("Type:pk" in URL-safe base64) and their decoding into typed errors."""

from __future__ import annotations

import base64
import binascii

from app.errors import InvalidInput


def encode_id(type_name: str, pk: int | str) -> str:
    """The global ID of object `pk` of `type_name`."""
    return base64.urlsafe_b64encode(f"{type_name}:{pk}".encode()).decode().rstrip("=")


def decode_id(type_name: str, value: str, field: str = "id") -> int:
    """The primary key inside a global ID of `type_name`; INVALID_INPUT if it is not one."""
    try:
        padded = value + "=" * (-len(value) % 4)
        kind, _, pk = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        if kind == type_name and pk.isdigit() and 0 < int(pk) < 2**63:
            return int(pk)
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise InvalidInput(f"Not a valid {type_name} ID.", field)

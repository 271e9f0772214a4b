"""Relay-style connections with opaque keyset cursors (newest first by id).

A cursor names its list (`kind`: one per connection field, and per scope where the field
takes one, such as a scenario) with its position, so a cursor handed to another list is refused
rather than read as a position there.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import strawberry

from app.errors import InvalidInput

T = TypeVar("T")
N = TypeVar("N")
MAX_PAGE = 100
MAX_POSITION = 2**63 - 1  # keyset positions are BIGINT ids


@strawberry.type
class PageInfo:
    """Where a page stands in its list."""

    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    """One item of a connection and its cursor."""

    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    """A page of items."""

    edges: list[Edge[T]]
    page_info: PageInfo


def encode_cursor(kind: str, position: int) -> str:
    """The opaque cursor for a keyset position in the list `kind`."""
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> int | None:
    """The keyset position inside a cursor of the list `kind`; INVALID_INPUT for anything else."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()).decode()
        tag, _, value = raw.rpartition(":")  # the position is digits; a kind may hold ":"
        # ASCII digits only (str.isdigit also takes other scripts' digits), within a BIGINT.
        if tag == kind and value.isascii() and value.isdigit() and int(value) <= MAX_POSITION:
            return int(value)
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise InvalidInput("Not a valid cursor of this list.", "after")


def page_size(first: int) -> int:
    """Check `first` (1..100)."""
    if not 0 < first <= MAX_PAGE:
        raise InvalidInput(f"first must be between 1 and {MAX_PAGE}.", "first")
    return first


def build_connection(
    kind: str, rows: Sequence[N], first: int, position: Callable[[N], int], node: Callable[[N], T]
) -> Connection[T]:
    """A connection of the list `kind` from `first + 1` fetched rows: the extra row only tells
    there is more."""
    page = list(rows[:first])
    edges = [Edge(cursor=encode_cursor(kind, position(r)), node=node(r)) for r in page]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > first,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )

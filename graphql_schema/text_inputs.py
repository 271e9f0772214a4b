"""Inputs refused before anything runs. Text no database can store (NUL characters, lone
surrogates), in literals and variables alike, so both databases answer the same: PostgreSQL
refuses such text, SQLite would store it. And lists in the variables longer than any input
takes, counted across all the variables, before they cost their coercion (a literal list is
bounded by the token limit)."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError, StringValueNode, ValidationRule

from app.text import storable

MESSAGE = "Text values must not hold NUL characters or lone surrogates."
# Twice the most any input takes (1,000 records or events a call), counted over every list in
# the variables (aliases let one request send several): a list a little too long is still
# answered by its service's user error; more than this costs no coercion at all.
MAX_LIST_ITEMS = 2_000
LIST_MESSAGE = (f"The lists in the variables hold more than {MAX_LIST_ITEMS} items in all; no"
                " request takes that many.")


def refusal(node: StringValueNode | None = None) -> GraphQLError:
    """The error for unstorable text (coded BAD_USER_INPUT, like a value a scalar refuses)."""
    return GraphQLError(MESSAGE, node, original_error=ValueError(MESSAGE))


class StorableText(ValidationRule):
    """Report every string literal of the document that no database text can hold."""

    def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
        """Check one string literal."""
        if not storable(node.value):
            self.report_error(refusal(node))


def variables_refusal(values: dict[str, Any]) -> GraphQLError | None:
    """The error for variables no input takes: a string anywhere (keys included) that is not
    storable, or lists of more than MAX_LIST_ITEMS items in all; None when there is neither."""
    pending: list[Any] = [values]
    items = 0
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if not storable(value):
                return refusal()
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            items += len(value)
            if items > MAX_LIST_ITEMS:
                return GraphQLError(LIST_MESSAGE, original_error=ValueError(LIST_MESSAGE))
            pending.extend(value)
    return None

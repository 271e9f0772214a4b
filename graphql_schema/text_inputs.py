"""Text inputs no database can store (NUL characters, lone surrogates), refused in literals
and variables alike before anything runs, so both databases answer the same: PostgreSQL
refuses such text, SQLite would store it."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError, StringValueNode, ValidationRule

from app.text import storable

MESSAGE = "Text values must not hold NUL characters or lone surrogates."


def refusal(node: StringValueNode | None = None) -> GraphQLError:
    """The error for unstorable text (coded BAD_USER_INPUT, like a value a scalar refuses)."""
    return GraphQLError(MESSAGE, node, original_error=ValueError(MESSAGE))


class StorableText(ValidationRule):
    """Report every string literal of the document that no database text can hold."""

    def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
        """Check one string literal."""
        if not storable(node.value):
            self.report_error(refusal(node))


def unstorable_variables(values: dict[str, Any]) -> bool:
    """True when a string anywhere in the variables (keys included) is not storable."""
    pending: list[Any] = [values]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if not storable(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False

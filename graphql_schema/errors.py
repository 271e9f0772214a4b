"""userErrors on mutation payloads, and error codes on GraphQL errors."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from strawberry.schema.exceptions import CannotGetOperationTypeError
from tortoise.exceptions import ValidationError

from app.errors import AccessError, DomainError

log = logging.getLogger(__name__)
T = TypeVar("T")
# A value a model field refuses (too long, out of range); the message never quotes the value,
# which may be personal data.
FIELD_REFUSED = "A value is too long or otherwise not allowed for its field."
# graphql-core's suggestion sentence (see graphql.pyutils.did_you_mean); names never hold a '?'.
_SUGGESTION = re.compile(r" ?Did you mean [^?]*\?")


@strawberry.type
class UserError:
    """A business refusal: a code clients switch on, a message, and the input field at fault."""

    code: str
    message: str
    field: str | None = None

    @classmethod
    def from_exc(cls, exc: DomainError) -> UserError:
        """The userError for a DomainError."""
        return cls(code=exc.code, message=exc.message, field=exc.field)


async def attempt(make: Callable[[], Awaitable[T]], refused: Callable[[UserError], T]) -> T:
    """Run a service call; a DomainError becomes a payload carrying one userError."""
    try:
        return await make()
    except DomainError as exc:
        return refused(UserError.from_exc(exc))


def _coded(error: GraphQLError, code: str, message: str | None = None) -> GraphQLError:
    return GraphQLError(
        message=error.message if message is None else message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions={**(error.extensions or {}), "code": code},
    )


class ErrorCodes(MaskErrors):
    """Give every error an extensions.code and hide unexpected ones' internals."""

    def __init__(self, production: bool = False) -> None:
        super().__init__(error_message="Unexpected error.")
        self.production = production

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        out: list[GraphQLError] = []
        for error in errors:
            original = error.original_error
            if isinstance(original, AccessError | DomainError):
                out.append(_coded(error, original.code, original.message))
            elif isinstance(original, ValidationError):
                # An input a model field refuses (longer than its column): the client's doing,
                # so not logged; a transaction the error left was rolled back.
                out.append(_coded(error, "INVALID_INPUT", FIELD_REFUSED))
            elif original is None:
                out.append(_coded(error, "BAD_REQUEST", self._hidden(error.message)))
            elif isinstance(original, GraphQLError):
                # Variables that do not fit their types (suggestions name enum values, fields).
                out.append(_coded(error, "BAD_USER_INPUT", self._hidden(error.message)))
            elif isinstance(original, CannotGetOperationTypeError):
                # No operation of that name (subscriptions; over HTTP the view refuses it first).
                out.append(_coded(error, "BAD_REQUEST", original.as_http_error_reason()))
            elif error.path is None and isinstance(original, ValueError | TypeError):
                # A literal a scalar refused while the document was validated (a bad BigInt).
                out.append(_coded(error, "BAD_USER_INPUT", self._hidden(error.message)))
            else:
                log.error("unexpected error at %s", error.path, exc_info=original)
                out.append(_coded(error, "INTERNAL_SERVER_ERROR", "Unexpected error."))
        return out

    def _hidden(self, message: str) -> str:
        """In production, a message without "Did you mean ...?" (it names what introspection hides)."""
        if self.production:
            return _SUGGESTION.sub("", message)
        return message

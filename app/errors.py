"""Domain errors: a code clients switch on, a human message, and the input field at fault."""

from __future__ import annotations


class DomainError(Exception):
    """A business refusal; the GraphQL layer turns it into a userError."""

    code = "INVALID_INPUT"

    def __init__(self, message: str, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code


class InvalidInput(DomainError):
    """The input is malformed or out of range."""

    code = "INVALID_INPUT"


class NotFound(DomainError):
    """The object does not exist or is not visible to the caller."""

    code = "NOT_FOUND"


class InvalidState(DomainError):
    """The object is not in a state that allows this action."""

    code = "INVALID_STATE"


class Duplicate(DomainError):
    """The object already exists."""

    code = "DUPLICATE"


class IdempotencyConflict(DomainError):
    """The idempotency key was used before with different input."""

    code = "IDEMPOTENCY_CONFLICT"


class InsufficientReductions(DomainError):
    """The holder has fewer grams available than asked."""

    code = "INSUFFICIENT_REDUCTIONS"


class InsufficientPoints(DomainError):
    """The holder has fewer points available than asked."""

    code = "INSUFFICIENT_POINTS"


class NotEligible(DomainError):
    """The caller or holding does not qualify for this action."""

    code = "NOT_ELIGIBLE"


class AccessError(Exception):
    """Authentication or authorization failure: a GraphQL error with extensions.code."""

    code = "FORBIDDEN"

    def __init__(self, message: str = "You may not do this.") -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(AccessError):
    """No valid token where one is needed."""

    code = "UNAUTHENTICATED"

    def __init__(self, message: str = "A valid token is required.") -> None:
        super().__init__(message)


class Forbidden(AccessError):
    """The caller's role may not do this."""

    code = "FORBIDDEN"

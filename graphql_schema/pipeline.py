"""The request pipeline: token limit, cached parse, cached validation with our rules, and
ErrorCodes' coding and masking of errors.

Queries and mutations go through `Pipeline.execute` (PuhuiSchema.execute): the cached document
and validation, graphql-core's execution with strawberry's resolvers, then every error coded.
That is strawberry's `Schema.execute` without its per-request extension machinery (an execution
context, an extension runner, a context manager per hook), which cost a fifth of a small
query's CPU. Subscriptions keep strawberry's path, with `Pipeline.extension` supplying the same
caches and coding as a schema extension. Both caches are keyed by the query text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from inspect import isawaitable
from typing import Any

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError, GraphQLSchema, parse, specified_rules
from graphql.language import DocumentNode
from strawberry.exceptions import MissingQueryError
from strawberry.execution import optimized_is_awaitable
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.utils.operation import get_operation_type

from graphql_schema.errors import ErrorCodes
from graphql_schema.text_inputs import variables_refusal

ALL_OPERATIONS = frozenset(OperationType)


def _request_error(exc: Exception) -> GraphQLError:
    """A request error for what the parser or a validation rule raised (400, BAD_REQUEST)."""
    if isinstance(exc, GraphQLError):
        return exc
    if isinstance(exc, RecursionError):
        return GraphQLError("The document nests too deeply to be checked.")
    return GraphQLError(f"The document could not be checked: {type(exc).__name__}.")


def _drop_tracebacks(errors: Iterable[BaseException]) -> None:
    """Let go of the frames behind errors already logged: an exception whose traceback holds
    the frame that holds it is a reference cycle, freed only by the cyclic collector - about a
    hundred objects per refused request, which piled up into whole-second collections."""
    for error in errors:
        seen: set[int] = set()
        pending: list[BaseException | None] = [error]
        while pending:
            current = pending.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            current.__traceback__ = None
            original = getattr(current, "original_error", None)
            pending += [original, current.__cause__, current.__context__]


class Pipeline:
    """Caches shared by every request of the process, and the coding of their errors."""

    def __init__(
        self, *, production: bool, rules: tuple[Any, ...], max_tokens: int, cache_size: int
    ) -> None:
        self.production = production
        self.rules = rules
        self.max_tokens = max_tokens
        self.codes = ErrorCodes(production=production)
        self.parsed: Callable[[str], DocumentNode] = lru_cache(maxsize=cache_size)(self._parse)
        self.validated: Callable[[GraphQLSchema, str, tuple[Any, ...]], list[GraphQLError]] = (
            lru_cache(maxsize=cache_size)(self._validate)
        )

    def _parse(self, query: str) -> DocumentNode:
        return parse(query, max_tokens=self.max_tokens)

    def _validate(
        self, schema: GraphQLSchema, query: str, base_rules: tuple[Any, ...]
    ) -> list[GraphQLError]:
        return validate_document(schema, self.parsed(query), base_rules + self.rules)

    async def execute(
        self,
        schema: Any,
        query: str | None,
        *,
        variable_values: dict[str, Any] | None,
        context_value: Any,
        root_value: Any,
        operation_name: str | None,
        allowed_operation_types: Iterable[OperationType] | None,
        operation_extensions: dict[str, Any] | None,
    ) -> ExecutionResult:
        """Run one query or mutation of `schema` (a strawberry Schema); its errors coded.

        Raises what strawberry's execute raises for a request it cannot run (no query, no
        single operation to pick, an operation type not allowed here)."""
        if not query:
            raise MissingQueryError
        try:
            document = self.parsed(query)
        except Exception as exc:  # noqa: BLE001 - a document the parser cannot take is refused
            return self._finish(None, [_request_error(exc)])
        try:
            operation_type = get_operation_type(document, operation_name)
        except RuntimeError as error:
            raise CannotGetOperationTypeError(operation_name) from error
        allowed = ALL_OPERATIONS if allowed_operation_types is None else allowed_operation_types
        if operation_type not in allowed:
            raise InvalidOperationTypeError(operation_type)
        try:
            errors = self.validated(schema._schema, query, tuple(specified_rules))
        except Exception as exc:  # noqa: BLE001 - e.g. a chain of fragments too deep to walk
            return self._finish(None, [_request_error(exc)])
        if errors:
            return self._finish(None, list(errors))
        refused = variables_refusal(variable_values) if variable_values else None
        if refused is not None:
            return self._finish(None, [refused])
        executor: Any = None
        try:
            executor = schema.execution_context_class.build(
                schema._schema,
                document,
                root_value=root_value,
                context_value=context_value,
                raw_variable_values=variable_values,
                operation_name=operation_name,
                is_awaitable=optimized_is_awaitable,
                operation_extensions=operation_extensions,
            )
            if isinstance(executor, list):  # the variables do not fit the operation
                return self._finish(None, executor)
            result = executor.execute_operation()
            if isawaitable(result):
                result = await result
        except Exception as exc:  # noqa: BLE001 - coded (and masked) like any other error
            error = exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
            return self._finish(None, [error])
        finally:
            # The executor refers to itself through these helpers; without the cycle the whole
            # execution state is freed when the request ends, not by a cyclic collection (which
            # stalled the event loop for tens of milliseconds every few hundred requests).
            if executor is not None and not isinstance(executor, list):
                executor.async_helpers = None
        assert isinstance(result, GraphQLExecutionResult)
        return self._finish(result.data, result.errors)

    def _finish(self, data: dict[str, Any] | None, errors: list[GraphQLError] | None) -> ExecutionResult:
        if errors:
            coded = self.codes._process_errors(errors)  # production drops "Did you mean" here
            _drop_tracebacks([*errors, *coded])
            errors = coded
        return ExecutionResult(data=data, errors=errors or None)

    def extension(self) -> Callable[[], SchemaExtension]:
        """The schema extension giving strawberry's own path (subscriptions) the same pipeline."""
        pipeline = self

        class RequestPipeline(ErrorCodes):
            """Parse and validate through the caches; code every error, mask unexpected ones."""

            def on_operation(self) -> Iterator[None]:
                """Set the token limit; afterwards code the errors of the result, if any."""
                self._stream_result_processed = False
                context = self.execution_context
                context.parse_options["max_tokens"] = pipeline.max_tokens
                yield
                if self._stream_result_processed:
                    return
                result = context.result
                if not isinstance(result, GraphQLExecutionResult | ExecutionResult):
                    result = getattr(result, "initial_result", None)
                if result is not None and result.errors:
                    coded = self._process_errors(result.errors)
                    _drop_tracebacks([*result.errors, *coded])
                    result.errors = coded

            def on_parse(self) -> Iterator[None]:
                """The cached document; on a syntax error strawberry parses again and reports it."""
                context = self.execution_context
                if context.query is not None:
                    with contextlib.suppress(GraphQLError):
                        context.graphql_document = pipeline.parsed(context.query)
                yield

            def on_validate(self) -> Iterator[None]:
                """The cached validation of this query text with the standard rules and ours."""
                context = self.execution_context
                if context.query is not None:
                    try:
                        context.pre_execution_errors = pipeline.validated(
                            context.schema._schema, context.query, context.validation_rules
                        )
                    except Exception as exc:  # noqa: BLE001 - as in execute(): a coded refusal
                        context.pre_execution_errors = [_request_error(exc)]
                yield

        def make() -> SchemaExtension:
            return RequestPipeline(production=pipeline.production)

        return make

"""One schema extension for the whole request pipeline: token limit, cached parse, cached
validation with our rules, and ErrorCodes' coding and masking of errors.

strawberry's separate extensions (MaxTokensLimiter, ParserCache, ValidationCache,
AddValidationRules, MaskErrors) cost ~50 us of CPU per request in hooks alone; ValidationCache
also hashes the whole document AST on every request. Here both caches are keyed by the query
text, and error processing is skipped when there are no errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError, GraphQLSchema, parse
from graphql.language import DocumentNode
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionResult

from graphql_schema.errors import ErrorCodes


def request_pipeline(
    *, production: bool, rules: tuple[Any, ...], max_tokens: int, cache_size: int
) -> Callable[[], SchemaExtension]:
    """A factory of the per-request extension; its caches are shared by every request."""

    @lru_cache(maxsize=cache_size)
    def parsed(query: str) -> DocumentNode:
        return parse(query, max_tokens=max_tokens)

    @lru_cache(maxsize=cache_size)
    def validated(
        schema: GraphQLSchema, query: str, base_rules: tuple[Any, ...]
    ) -> list[GraphQLError]:
        return validate_document(schema, parsed(query), base_rules + rules)

    class RequestPipeline(ErrorCodes):
        """Parse and validate through the caches; code every error, mask unexpected ones."""

        def on_operation(self) -> Iterator[None]:
            """Set the token limit; afterwards code the errors of the result, if any."""
            self._stream_result_processed = False
            context = self.execution_context
            context.parse_options["max_tokens"] = max_tokens
            yield
            if self._stream_result_processed:
                return
            result = context.result
            if not isinstance(result, GraphQLExecutionResult | ExecutionResult):
                result = getattr(result, "initial_result", None)
            if result is not None and result.errors:
                result.errors = self._process_errors(result.errors)

        def on_parse(self) -> Iterator[None]:
            """The cached document; on a syntax error strawberry parses again and reports it."""
            context = self.execution_context
            if context.query is not None:
                with contextlib.suppress(GraphQLError):
                    context.graphql_document = parsed(context.query)
            yield

        def on_validate(self) -> Iterator[None]:
            """The cached validation of this query text with the standard rules and ours."""
            context = self.execution_context
            if context.query is not None:
                context.pre_execution_errors = validated(
                    context.schema._schema, context.query, context.validation_rules
                )
            yield

    def make() -> SchemaExtension:
        return RequestPipeline(production=production)

    return make

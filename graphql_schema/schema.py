"""The one strawberry Schema of the process, with its limits, caches and error handling."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import strawberry
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions.max_aliases import create_validator as alias_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from app.settings import get_settings
from graphql_schema import account, mall, points, records, registry, retirement
from graphql_schema.pipeline import Pipeline
from graphql_schema.scalars import SCALAR_MAP
from graphql_schema.text_inputs import StorableText

MAX_DEPTH = 10
MAX_TOKENS = 5000
MAX_ALIASES = 30
CACHE_SIZE = 1024  # distinct query texts whose parse and validation are kept

DOMAINS: list[Any] = [account, records, registry, points, mall, retirement]


def _merged(name: str) -> type | None:
    parts = tuple(getattr(m, name) for m in DOMAINS if hasattr(m, name))
    return merge_types(name, parts) if parts else None


class PuhuiSchema(strawberry.Schema):
    """strawberry's Schema, executing queries and mutations through our request pipeline and
    without its per-error ERROR log with traceback.

    Refusals (UNAUTHENTICATED, validation failures, typed input errors) are the client's doing and
    are not logged; ErrorCodes (in the request pipeline) logs every unexpected error once, with its
    traceback.
    """

    def __init__(self, *args: Any, pipeline: Pipeline, **kwargs: Any) -> None:
        super().__init__(*args, extensions=[pipeline.extension()], **kwargs)
        self.pipeline = pipeline

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """One query or mutation through the pipeline (see graphql_schema.pipeline)."""
        return await self.pipeline.execute(
            self, query, variable_values=variable_values, context_value=context_value,
            root_value=root_value, operation_name=operation_name,
            allowed_operation_types=allowed_operation_types,
            operation_extensions=operation_extensions,
        )

    def process_errors(self, errors: list[Any], execution_context: Any = None) -> None:
        """Leave logging to ErrorCodes."""


def build_schema() -> strawberry.Schema:
    """Assemble the schema from every domain's Query, Mutation and Subscription."""
    settings = get_settings()
    # Rule classes are built once here: new classes per request would defeat the validation cache.
    rules: list[Any] = [depth_rule(MAX_DEPTH, None, None), alias_rule(MAX_ALIASES), StorableText]
    if settings.production:
        rules.append(NoSchemaIntrospectionCustomRule)
    pipeline = Pipeline(production=settings.production, rules=tuple(rules),
                        max_tokens=MAX_TOKENS, cache_size=CACHE_SIZE)
    return PuhuiSchema(
        query=_merged("Query"),
        mutation=_merged("Mutation"),
        subscription=_merged("Subscription"),
        pipeline=pipeline,
        config=StrawberryConfig(
            auto_camel_case=True,
            scalar_map=SCALAR_MAP,
        ),
    )


schema = build_schema()

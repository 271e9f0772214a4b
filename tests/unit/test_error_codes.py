"""Error coding: what a production answer may say about the schema."""

from __future__ import annotations

from graphql import GraphQLError

from graphql_schema.errors import ErrorCodes


def test_production_answers_never_suggest_names():
    """'Did you mean ...?' names arguments and types that production's introspection hides."""
    errors = [GraphQLError("Unknown argument 'firs' on field 'Me.redemptions'. Did you mean 'first'?"),
              GraphQLError("Unknown type 'Mercha'. Did you mean 'Merchant'?")]
    shown = [e.message for e in ErrorCodes(production=True)._process_errors(errors)]
    assert shown == ["Unknown argument 'firs' on field 'Me.redemptions'.", "Unknown type 'Mercha'."]
    kept = [e.message for e in ErrorCodes(production=False)._process_errors(errors)]
    assert all("Did you mean" in m for m in kept)

"""The contract operations of points validate against the served schema."""

from __future__ import annotations

import pytest
from graphql import parse, validate

from graphql_schema.schema import schema
from tests.helpers import contract_operations

POINTS_OPERATIONS = [
    "MyAccount", "MyGrowth", "ConversionRule", "SetConversionRule", "ConvertReductions",
    "DefineBehaviorScenario", "RecordBehaviors", "AccountChanged",
]


@pytest.mark.parametrize("name", POINTS_OPERATIONS)
def test_contract_operation_validates(name):
    errors = validate(schema._schema, parse(contract_operations()[name]))
    assert errors == [], [e.message for e in errors]

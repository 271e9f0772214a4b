"""Every operation shipped clients send validates against the served schema."""

from __future__ import annotations

import pytest
from graphql import parse, validate

from graphql_schema.schema import schema
from tests.helpers import contract_operations


@pytest.mark.parametrize("name", sorted(contract_operations()))
def test_contract_operation_validates(name: str) -> None:
    document = parse(contract_operations()[name])
    errors = validate(schema._schema, document)
    assert not errors, [e.message for e in errors]


def test_contract_has_every_operation() -> None:
    assert len(contract_operations()) == 33

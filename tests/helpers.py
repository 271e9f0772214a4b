"""Helpers for API tests: tokens, GraphQL calls, unique names, the contract's operations."""

from __future__ import annotations

import random
import re
import string
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx

from app.auth import issue_token
from app.participants import Participant

CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "contract" / "operations.graphql"


def unique(prefix: str = "t") -> str:
    """A name no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def token(sub: str | None = None, roles: str | list[str] = "resident", org: str | None = None,
          **kwargs: Any) -> str:
    """A signed test token."""
    role_list = [roles] if isinstance(roles, str) else roles
    return issue_token(sub or unique("sub"), role_list, org=org, **kwargs)


def credit_code() -> str:
    """A random 18-character unified social credit code with a valid GB 32100-2015 check digit."""
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    weights = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]
    body = "91" + "310000" + "".join(random.choice(string.digits + "ABCDEFGHJKLMNPQRTUWXY")
                                     for _ in range(9))
    total = sum(alphabet.index(ch) * w for ch, w in zip(body, weights, strict=True))
    return body + alphabet[(31 - total % 31) % 31]


@lru_cache(maxsize=1)
def contract_operations() -> dict[str, str]:
    """The contract's operations by name, each with its full text."""
    text = CONTRACT.read_text()
    parts = re.split(r"(?m)^(?=(?:query|mutation|subscription) )", text)
    ops: dict[str, str] = {}
    for part in parts:
        match = re.match(r"(?:query|mutation|subscription) (\w+)", part)
        if match:
            ops[match.group(1)] = part
    return ops


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    auth: str | None = None,
) -> dict[str, Any]:
    """POST a GraphQL document and return the JSON body."""
    headers = {"authorization": f"Bearer {auth}"} if auth else {}
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert response.status_code < 500, response.text
    return response.json()


async def op(
    client: httpx.AsyncClient, name: str, variables: dict[str, Any] | None = None,
    auth: str | None = None,
) -> dict[str, Any]:
    """Run one contract operation by name, exactly as shipped clients send it."""
    return await gql(client, contract_operations()[name], variables, auth)


def data(body: dict[str, Any]) -> dict[str, Any]:
    """The data of a response that must have no errors."""
    assert not body.get("errors"), body.get("errors")
    return body["data"]


def error_codes(body: dict[str, Any]) -> list[str]:
    """The extensions.code of each GraphQL error."""
    return [e.get("extensions", {}).get("code") for e in body.get("errors") or []]


def user_error_codes(payload: dict[str, Any]) -> list[str]:
    """The code of each userError on a mutation payload."""
    return [e["code"] for e in payload["userErrors"]]


async def find_resident(subject: str) -> int | None:
    """The participant id of a resident already known by `subject`, or None."""
    found = await Participant.filter(kind="individual", subject=subject).values_list("id", flat=True)
    return found[0] if found else None


async def cut_off_request(
    app: Any, path: str, headers: dict[str, str], body: bytes, declared: int
) -> list[dict[str, Any]]:
    """POST `body` to the ASGI `app` announcing `declared` bytes, then disconnect, as a client
    whose connection drops mid-body does; the messages the app sent back."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 50000),
        "headers": [(k.encode(), v.encode())
                    for k, v in {**headers, "content-length": str(declared)}.items()],
    }
    incoming = [{"type": "http.request", "body": body, "more_body": True}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent

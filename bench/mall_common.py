"""Mall pieces of the mall benchmarks: contract operations over HTTP, and a merchant approved and
listing its rights, set up through the API."""

from __future__ import annotations

import httpx

from bench.support import Bench
from tests.helpers import contract_operations, credit_code

SECRET = "bench-secret-for-the-mall-benchmarks-0123456789"


async def graphql(client: httpx.AsyncClient, name: str, variables: dict, auth: str) -> dict:
    """Run one contract operation; its data, or raise on errors."""
    response = await client.post("/graphql", json={
        "query": contract_operations()[name], "variables": variables},
        headers={"authorization": f"Bearer {auth}"})
    if response.status_code >= 500 or not response.content.startswith(b"{"):
        raise RuntimeError(f"{name}: HTTP {response.status_code} {response.text[:500]}")
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(f"{name}: {body['errors']}")
    return body["data"]


async def merchant_with_rights(bench: Bench, base: str, rights: int, stock: int,
                               price: int) -> list[str]:
    """A merchant applied and approved, listing `rights` rights; their ids."""
    code = credit_code()
    merchant = bench.sign("bench-merchant", ["merchant"], org=code)
    center = bench.sign("bench-center", ["center"])
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        applied = await graphql(client, "ApplyMerchant", {"input": {
            "name": "Bench Coffee", "creditCode": code, "contact": "13800138000"}}, merchant)
        merchant_id = applied["applyMerchant"]["merchant"]["id"]
        await graphql(client, "ReviewMerchant", {"input": {"id": merchant_id, "approve": True}}, center)
        ids = []
        for i in range(rights):
            created = await graphql(client, "CreateRight", {"input": {
                "title": f"Bench right {i}", "description": "A flat white at any shop",
                "category": "bench", "pointsPrice": str(price), "stock": stock}}, merchant)
            payload = created["createRight"]
            if payload["userErrors"]:
                raise RuntimeError(payload["userErrors"])
            ids.append(payload["right"]["id"])
    return ids

"""Store keys of the mall, namespaced by the database they describe.

Counters and cached pages mirror rows of one database. Keys carry a short digest of the database
URL, so a recreated or different database (a test run, a restored copy) sharing the same Redis
never reads counters or pages that belong to another one.
"""

from __future__ import annotations

from app.redis import database_digest


def store_key(*parts: object) -> str:
    """A mall key in the store: puhui:mall:<database digest>:<parts joined by colons>."""
    return ":".join(["puhui", "mall", database_digest(), *(str(p) for p in parts)])

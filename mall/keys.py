"""Store keys of the mall, namespaced by the database they describe.

Counters and cached pages mirror rows of one database. Keys carry a short digest of the database
URL, so a recreated or different database (a test run, a restored copy) sharing the same Redis
never reads counters or pages that belong to another one.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from app.settings import get_settings


@lru_cache(maxsize=1)
def _namespace() -> str:
    return hashlib.sha256(get_settings().database_url.encode()).hexdigest()[:10]


def store_key(*parts: object) -> str:
    """A mall key in the store: puhui:mall:<database digest>:<parts joined by colons>."""
    return ":".join(["puhui", "mall", _namespace(), *(str(p) for p in parts)])

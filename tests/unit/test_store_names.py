"""Names in the shared store: each carries the digest of the database it describes."""

from __future__ import annotations

from app.events import account_channel
from app.jobs import lease_key
from app.redis import database_digest
from mall.keys import store_key


def test_keys_and_channels_of_one_database_carry_its_digest() -> None:
    # Redis pub/sub ignores the db number: servers of two databases sharing one Redis must not
    # push each other's account changes to residents who happen to have the same id.
    digest = database_digest()
    assert len(digest) == 10
    assert account_channel(7) == f"puhui:{digest}:account:7"
    assert lease_key() == f"puhui:jobs:{digest}:lease"
    assert store_key("stock", 3) == f"puhui:mall:{digest}:stock:3"

"""Open the system accounts every ledger posting names, before any posting can run.

Opened here rather than on first use, so no transaction ever creates one that a concurrent
transaction could be handed before it commits, and so they are the oldest accounts.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

SYSTEM_ACCOUNTS = [
    ("GRAMS_ISSUANCE", "REDUCTION_GRAMS", "issuance"),
    ("CONVERSION_RESERVE", "REDUCTION_GRAMS", "reserve"),
    ("GRAMS_RETIRED", "REDUCTION_GRAMS", "retired"),
    ("POINTS_ISSUANCE", "POINTS", "issuance"),
    ("POINTS_BOUGHT_BACK", "POINTS", "burned"),
]


async def open_accounts(apps, schema_editor) -> None:
    conn = schema_editor.client
    account = apps.get_model("core", "Account")
    for code, asset, kind in SYSTEM_ACCOUNTS:
        if not await account.filter(code=code).using_db(conn).exists():
            await account.create(code=code, asset=asset, kind=kind, using_db=conn)


async def close_accounts(apps, schema_editor) -> None:
    conn = schema_editor.client
    codes = [code for code, _, _ in SYSTEM_ACCOUNTS]
    await apps.get_model("core", "Account").filter(code__in=codes, balance=0).using_db(conn).delete()


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [ops.RunPython(open_accounts, close_accounts)]

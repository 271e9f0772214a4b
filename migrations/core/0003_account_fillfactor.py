"""Leave half of each ledger_account page free on PostgreSQL, so balance updates stay in place.

Every posting rewrites its accounts' rows. On a full page (the default) the new version of a row
goes to another page and gets an entry in each of the table's three indexes; with room left on
its page, PostgreSQL writes it beside the old one and touches no index (a heap-only update, as
no index holds the balance). An issuance to 100,000 residents rewrites 100,000 accounts: 2.0 s
on full pages, 0.7 s on half-full ones, on a 2-core machine. Rows already stored move to roomier
pages as they are rewritten. SQLite has no such setting.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops


async def leave_room(apps, schema_editor) -> None:
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor.client.execute_script("ALTER TABLE ledger_account SET (fillfactor = 50)")


async def fill_pages(apps, schema_editor) -> None:
    if schema_editor.client.capabilities.dialect == "postgres":
        await schema_editor.client.execute_script("ALTER TABLE ledger_account RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("core", "0002_system_accounts")]

    operations = [ops.RunPython(leave_room, fill_pages)]

"""Leave room on every page of ledger_account (PostgreSQL), so a balance update is a HOT update.

Every posting rewrites account rows. With full pages each new row version went to another page
and into all three indexes of the table; with room left on its page, PostgreSQL keeps the new
version there and touches no index (a heap-only tuple). One issuance to 100,000 residents spent
a second on these updates. Pages written from now on keep the room; SQLite has no such setting.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops

FILLFACTOR = 80


async def leave_room(apps, schema_editor) -> None:
    conn = schema_editor.client
    if conn.capabilities.dialect == "postgres":
        await conn.execute_script(f"ALTER TABLE ledger_account SET (fillfactor = {FILLFACTOR})")


async def fill_pages(apps, schema_editor) -> None:
    conn = schema_editor.client
    if conn.capabilities.dialect == "postgres":
        await conn.execute_script("ALTER TABLE ledger_account RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("core", "0002_system_accounts")]

    operations = [ops.RunPython(leave_room, fill_pages)]

"""Seed the demo default conversion rule (10 g per point) and the default growth-level table.

Written with the migration state's models, so the same step runs on SQLite and PostgreSQL.
"""

from datetime import datetime, timezone

from tortoise import migrations
from tortoise.migrations import operations as ops

DEFAULT_GRAMS_PER_POINT = 10
DEFAULT_RULE_FROM = datetime(2020, 1, 1, tzinfo=timezone.utc)
DEFAULT_LEVELS = [
    ("L1", "绿芽", 0),
    ("L2", "新叶", 100),
    ("L3", "小树", 500),
    ("L4", "大树", 2000),
    ("L5", "森林", 8000),
    ("L6", "地球卫士", 20000),
]


async def seed(apps, schema_editor) -> None:
    conn = schema_editor.client
    rule = apps.get_model("points", "ConversionRule")
    if not await rule.all().using_db(conn).exists():
        await rule.create(
            grams_per_point=DEFAULT_GRAMS_PER_POINT,
            effective_from=DEFAULT_RULE_FROM,
            set_by="default",
            using_db=conn,
        )
    level = apps.get_model("points", "GrowthLevel")
    if not await level.all().using_db(conn).exists():
        for code, name, minimum in DEFAULT_LEVELS:
            await level.create(code=code, name=name, min_experience=minimum, using_db=conn)


async def unseed(apps, schema_editor) -> None:
    conn = schema_editor.client
    await apps.get_model("points", "ConversionRule").filter(set_by="default").using_db(conn).delete()
    await apps.get_model("points", "GrowthLevel").all().using_db(conn).delete()


class Migration(migrations.Migration):
    dependencies = [("points", "0001_initial")]

    operations = [ops.RunPython(seed, unseed)]

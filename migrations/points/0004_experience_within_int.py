"""Lifetime experience stops at 2,147,483,647, the largest GraphQL Int.

Earlier, a resident's lifetime experience could pass it (a bigint column), and from then on
MyAccount and MyGrowth could not answer for them. Totals past it are brought down to it, then a
CHECK keeps every total within it.
"""

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.migrations.constraints import CheckConstraint

_CLAMP = "UPDATE points_experience SET total = 2147483647 WHERE total > 2147483647"


async def clamp(apps, schema_editor) -> None:
    await schema_editor.client.execute_script(_CLAMP)


async def keep(apps, schema_editor) -> None:
    """Going back leaves the totals as they are."""


class Migration(migrations.Migration):
    dependencies = [('points', '0003_daily_usage_by_person')]

    initial = False

    operations = [
        ops.RunPython(clamp, keep),
        ops.RemoveConstraint(
            model_name='Experience',
            name='points_experience_not_negative',
            fields=None,
        ),
        ops.AddConstraint(
            model_name='Experience',
            constraint=CheckConstraint(check='total >= 0 AND total <= 2147483647', name='points_experience_within_int'),
        ),
    ]

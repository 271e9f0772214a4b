from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.migrations.constraints import UniqueConstraint

# A batch of behavior events reads the daily usage of its people and days for every behavior of
# its scenario (points.behaviors._usage). The unique index had behavior second, so that read
# could use only its scenario column and scanned every usage row of the scenario (one per
# person, behavior and active day, never deleted). The same columns with person and day before
# behavior serve that read and the per-row update alike.

class Migration(migrations.Migration):
    dependencies = [('points', '0002_defaults')]

    initial = False

    operations = [
        ops.RemoveConstraint(
            model_name='BehaviorDailyUsage',
            name='points_behavior_daily_once',
            fields=None,
        ),
        ops.AddConstraint(
            model_name='BehaviorDailyUsage',
            constraint=UniqueConstraint(fields=('scenario_id', 'participant_id', 'day', 'behavior'), name='points_behavior_daily_once'),
        ),
    ]

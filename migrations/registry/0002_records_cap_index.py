from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index
from tortoise.migrations.constraints import UniqueConstraint

# The unique externalRef constraint is dropped and added again around the column removal: on
# SQLite removing a column remakes the table, and the remake would silently lose it.
ONCE = UniqueConstraint(fields=('scenario_id', 'external_ref'), name='registry_record_once')


class Migration(migrations.Migration):
    dependencies = [('registry', '0001_initial')]

    initial = False

    operations = [
        ops.RemoveIndex(
            model_name='ScenarioRecord',
            name=None,
            fields=['scenario_id', 'issuance_id', 'occurred_at'],
        ),
        ops.RemoveConstraint(model_name='ScenarioRecord', name='registry_record_once'),
        ops.RemoveField(model_name='ScenarioRecord', name='issuance_id'),
        ops.AddConstraint(model_name='ScenarioRecord', constraint=ONCE),
        ops.AddIndex(
            model_name='ScenarioRecord',
            index=Index(fields=['scenario_id', 'day', 'participant_id']),
        ),
        ops.DeleteModel(name='DailyUsage'),
    ]

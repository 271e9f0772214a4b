from tortoise import migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

# The daily cap is settled at issuance, so no batch reads a person's day any more: the
# (scenario, day, participant) index, written in random order for every record, gives way to
# (scenario, created_at), written in nearly ascending order, which bounds what an issuance reads.


class Migration(migrations.Migration):
    dependencies = [('registry', '0002_records_cap_index')]

    initial = False

    operations = [
        ops.RemoveIndex(
            model_name='ScenarioRecord',
            name=None,
            fields=['scenario_id', 'day', 'participant_id'],
        ),
        ops.AddIndex(
            model_name='ScenarioRecord',
            index=Index(fields=['scenario_id', 'created_at']),
        ),
    ]

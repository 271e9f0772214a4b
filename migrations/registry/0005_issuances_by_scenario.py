from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

# A scenario's issuances: counted for the next serial number inside every issuance, and paged
# newest first by scenarioIssuances; without this index both read every issuance of every
# scenario.

class Migration(migrations.Migration):
    dependencies = [('registry', '0004_records_created_brin')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='Issuance',
            index=Index(fields=['scenario_id', 'id']),
        ),
    ]

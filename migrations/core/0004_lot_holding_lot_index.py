from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

# Holdings by lot: tracing a lot (`registry.traceability`) and the check that a new lot has no
# holder yet (`app.ledger.bulk.issue_lot`) read them by lot_id alone, which the unique
# (account_id, lot_id) index cannot serve: without this index each read scans every holding of
# every lot ever issued.

class Migration(migrations.Migration):
    dependencies = [('core', '0003_account_fillfactor')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='LotHolding',
            index=Index(fields=['lot_id']),
        ),
    ]

from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

# An audit row of a staff member's read of a page names every id shown: 100 ids need about
# 700 characters and more, past the 512 the column held, which cut the list short.

class Migration(migrations.Migration):
    dependencies = [('core', '0004_lot_holding_lot_index')]

    initial = False

    operations = [
        ops.AlterField(
            model_name='AuditEvent',
            name='detail',
            field=fields.TextField(default='', unique=False),
        ),
    ]

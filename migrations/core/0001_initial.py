from tortoise import migrations
from tortoise.migrations import operations as ops
from orjson import loads
from tortoise.fields.data import JSON_DUMPS
from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import CheckConstraint, UniqueConstraint

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Account',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('asset', fields.CharField(max_length=16)),
                ('kind', fields.CharField(default='holder', max_length=16)),
                ('participant_id', fields.BigIntField(null=True)),
                ('code', fields.CharField(null=True, unique=True, max_length=64)),
                ('balance', fields.BigIntField(default=0)),
                ('pending', fields.BigIntField(default=0)),
            ],
            options={'table': 'ledger_account', 'app': 'core', 'pk_attr': 'id', 'table_description': "One holder's (or one system role's) balance of one asset."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='AuditEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('actor_subject', fields.CharField(max_length=128)),
                ('actor_roles', fields.CharField(max_length=256)),
                ('action', fields.CharField(max_length=64)),
                ('target_type', fields.CharField(max_length=32)),
                ('target_id', fields.CharField(max_length=64)),
                ('detail', fields.CharField(default='', max_length=512)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'audit_event', 'app': 'core', 'pk_attr': 'id', 'table_description': 'One audited action: who, what, on whom, when.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Entry',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account_id', fields.BigIntField()),
                ('transfer_id', fields.BigIntField()),
                ('asset', fields.CharField(max_length=16)),
                ('kind', fields.CharField(max_length=16)),
                ('amount', fields.BigIntField()),
                ('balance_after', fields.BigIntField()),
                ('memo', fields.CharField(default='', max_length=256)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'ledger_entry', 'app': 'core', 'indexes': [Index(fields=['account_id', 'id']), Index(fields=['transfer_id'])], 'pk_attr': 'id', 'table_description': 'One side of a transfer as its account sees it: signed amount and balance after.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='IdempotencyRecord',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('scope', fields.CharField(max_length=160)),
                ('key', fields.CharField(max_length=128)),
                ('request_hash', fields.CharField(max_length=64)),
                ('result', fields.JSONField(null=True, encoder=JSON_DUMPS, decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'idempotency_record', 'app': 'core', 'unique_together': (('scope', 'key'),), 'pk_attr': 'id', 'table_description': 'The first request made with (scope, key), its input hash and its result.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Lot',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('serial_prefix', fields.CharField(unique=True, max_length=64)),
                ('source_type', fields.CharField(max_length=16)),
                ('source_code', fields.CharField(max_length=64)),
                ('methodology_code', fields.CharField(max_length=64)),
                ('methodology_version', fields.CharField(max_length=32)),
                ('methodology_class', fields.CharField(max_length=4)),
                ('vintage', fields.IntField()),
                ('issued_grams', fields.BigIntField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'ledger_lot', 'app': 'core', 'pk_attr': 'id', 'table_description': 'An issuance lot: a serial block of grams of one source, class and vintage.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LotHolding',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('account_id', fields.BigIntField()),
                ('lot_id', fields.BigIntField()),
                ('balance', fields.BigIntField(default=0)),
            ],
            options={'table': 'ledger_lot_holding', 'app': 'core', 'pk_attr': 'id', 'table_description': 'How many grams of one lot one account holds now.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Participant',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('kind', fields.CharField(max_length=16)),
                ('subject', fields.CharField(null=True, unique=True, max_length=128)),
                ('org_code', fields.CharField(null=True, unique=True, max_length=18)),
                ('display_name', fields.CharField(default='', max_length=128)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'participant', 'app': 'core', 'pk_attr': 'id', 'table_description': 'Anyone holding an account: an individual (resident) or an organisation.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Transfer',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('asset', fields.CharField(max_length=16)),
                ('kind', fields.CharField(max_length=16)),
                ('debit_account_id', fields.BigIntField()),
                ('credit_account_id', fields.BigIntField()),
                ('amount', fields.BigIntField()),
                ('reference', fields.CharField(max_length=96)),
                ('memo', fields.CharField(default='', max_length=256)),
                ('reverses_id', fields.BigIntField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'ledger_transfer', 'app': 'core', 'pk_attr': 'id', 'table_description': 'A movement of `amount` of one asset from the debit account to the credit account.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='TransferLot',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('transfer_id', fields.BigIntField()),
                ('lot_id', fields.BigIntField()),
                ('amount', fields.BigIntField()),
            ],
            options={'table': 'ledger_transfer_lot', 'app': 'core', 'indexes': [Index(fields=['transfer_id']), Index(fields=['lot_id'])], 'pk_attr': 'id', 'table_description': 'Which lots a grams transfer drew on, and how much of each.'},
            bases=['Model'],
        ),
        ops.AddConstraint(model_name='Account', constraint=CheckConstraint(check="kind = 'issuance' OR (balance >= 0 AND pending >= 0 AND pending <= balance)", name='ledger_account_not_negative')),
        ops.AddConstraint(model_name='Account', constraint=UniqueConstraint(fields=('participant_id', 'asset'), name='ledger_account_holder_asset')),
        ops.AddConstraint(model_name='Lot', constraint=CheckConstraint(check='issued_grams > 0', name='ledger_lot_positive')),
        ops.AddConstraint(model_name='LotHolding', constraint=CheckConstraint(check='balance >= 0', name='ledger_lot_holding_not_negative')),
        ops.AddConstraint(model_name='LotHolding', constraint=UniqueConstraint(fields=('account_id', 'lot_id'), name='ledger_lot_holding_account_lot')),
        ops.AddConstraint(model_name='Transfer', constraint=CheckConstraint(check='amount > 0', name='ledger_transfer_positive')),
        ops.AddIndex(model_name='Transfer', index=Index(fields=['reference'])),
    ]

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
            name='BehaviorDailyUsage',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('scenario_id', fields.BigIntField()),
                ('behavior', fields.CharField(max_length=64)),
                ('participant_id', fields.BigIntField()),
                ('day', fields.DateField()),
                ('experience', fields.IntField(default=0)),
            ],
            options={'table': 'points_behavior_daily_usage', 'app': 'points', 'pk_attr': 'id', 'table_description': 'Experience a person earned from one behavior of one scenario on one Asia/Shanghai day.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='BehaviorEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('scenario_id', fields.BigIntField()),
                ('external_ref', fields.CharField(max_length=128)),
                ('participant_id', fields.BigIntField()),
                ('behavior', fields.CharField(max_length=64)),
                ('computed_experience', fields.IntField()),
                ('earned_experience', fields.IntField()),
                ('occurred_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('day', fields.DateField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'points_behavior_event', 'app': 'points', 'pk_attr': 'id', 'table_description': 'One behavior reported by an operator: experience computed and earned under the cap.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='BehaviorRule',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('scenario_id', fields.BigIntField()),
                ('behavior', fields.CharField(max_length=64)),
                ('experience', fields.IntField()),
                ('daily_cap', fields.IntField()),
            ],
            options={'table': 'points_behavior_rule', 'app': 'points', 'pk_attr': 'id', 'table_description': 'Experience per event of one behavior and the most a person earns from it in a day.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='BehaviorScenario',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('code', fields.CharField(unique=True, max_length=64)),
                ('name', fields.CharField(max_length=200)),
                ('operator_participant_id', fields.BigIntField()),
                ('operator_org', fields.CharField(max_length=18)),
                ('defined_by', fields.CharField(max_length=128)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'points_behavior_scenario', 'app': 'points', 'pk_attr': 'id', 'table_description': 'A behavior scenario run by an operator organisation, yielding experience (Art. 10).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Conversion',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('participant_id', fields.BigIntField()),
                ('rule_id', fields.BigIntField()),
                ('grams_per_point', fields.BigIntField()),
                ('asked_grams', fields.BigIntField()),
                ('grams', fields.BigIntField()),
                ('points', fields.BigIntField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'points_conversion', 'app': 'points', 'pk_attr': 'id', 'table_description': 'A resident turning grams into points at the rule in force (Art. 16).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ConversionRule',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('grams_per_point', fields.BigIntField()),
                ('effective_from', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('set_by', fields.CharField(max_length=128)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'points_conversion_rule', 'app': 'points', 'pk_attr': 'id', 'table_description': 'One version of the conversion rate: grams per point from effective_from on.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CreditSnapshot',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('participant_id', fields.BigIntField()),
                ('score', fields.IntField()),
                ('grade', fields.CharField(max_length=8)),
                ('factors', fields.JSONField(encoder=JSON_DUMPS, decoder=loads)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'points_credit_snapshot', 'app': 'points', 'indexes': [Index(fields=['participant_id', 'id'])], 'pk_attr': 'id', 'table_description': 'A past credit standing, kept whenever the score or grade changed.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='CreditStanding',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('participant_id', fields.BigIntField(unique=True)),
                ('score', fields.IntField()),
                ('grade', fields.CharField(max_length=8)),
                ('factors', fields.JSONField(encoder=JSON_DUMPS, decoder=loads)),
                ('grams_mark', fields.BigIntField()),
                ('points_mark', fields.BigIntField()),
                ('experience_mark', fields.BigIntField(default=0)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'points_credit_standing', 'app': 'points', 'pk_attr': 'id', 'table_description': 'The current credit standing of a participant and the balances and experience it was'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Experience',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('participant_id', fields.BigIntField(unique=True)),
                ('total', fields.BigIntField(default=0)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={'table': 'points_experience', 'app': 'points', 'pk_attr': 'id', 'table_description': 'A participant lifetime experience: non-transferable, never convertible.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='GrowthLevel',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('code', fields.CharField(unique=True, max_length=32)),
                ('name', fields.CharField(max_length=64)),
                ('min_experience', fields.BigIntField(unique=True)),
            ],
            options={'table': 'points_growth_level', 'app': 'points', 'pk_attr': 'id', 'table_description': 'One step of the growth table: reached at min_experience of lifetime experience.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='LevelCrossing',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('participant_id', fields.BigIntField()),
                ('from_code', fields.CharField(null=True, max_length=32)),
                ('to_code', fields.CharField(max_length=32)),
                ('experience', fields.BigIntField()),
                ('crossed_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'points_level_crossing', 'app': 'points', 'indexes': [Index(fields=['participant_id', 'id'])], 'pk_attr': 'id', 'table_description': 'A participant reaching another growth level, with when it happened.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MisconductFlag',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('participant_id', fields.BigIntField()),
                ('kind', fields.CharField(max_length=24)),
                ('reason', fields.CharField(max_length=500)),
                ('recorded_by', fields.CharField(max_length=128)),
                ('recorded_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('lifted_by', fields.CharField(null=True, max_length=128)),
                ('lift_reason', fields.CharField(null=True, max_length=500)),
                ('lifted_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'points_misconduct_flag', 'app': 'points', 'indexes': [Index(fields=['participant_id', 'lifted_at'])], 'pk_attr': 'id', 'table_description': 'A misconduct finding by operations, active until lifted, with both reasons.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='VoucherCancellation',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('participant_id', fields.BigIntField()),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'points_voucher_cancellation', 'app': 'points', 'indexes': [Index(fields=['participant_id', 'created_at'])], 'pk_attr': 'id', 'table_description': 'A resident cancelling a redeemed voucher, noted for the credit standing.'},
            bases=['Model'],
        ),
        ops.AddConstraint(model_name='BehaviorDailyUsage', constraint=UniqueConstraint(fields=('scenario_id', 'behavior', 'participant_id', 'day'), name='points_behavior_daily_once')),
        ops.AddConstraint(model_name='BehaviorEvent', constraint=CheckConstraint(check='earned_experience >= 0 AND earned_experience <= computed_experience', name='points_event_earned_within_computed')),
        ops.AddConstraint(model_name='BehaviorEvent', constraint=UniqueConstraint(fields=('scenario_id', 'external_ref'), name='points_event_once')),
        ops.AddIndex(model_name='BehaviorEvent', index=Index(fields=['participant_id', 'id'])),
        ops.AddConstraint(model_name='BehaviorRule', constraint=CheckConstraint(check='experience > 0 AND daily_cap > 0', name='points_behavior_rule_positive')),
        ops.AddConstraint(model_name='BehaviorRule', constraint=UniqueConstraint(fields=('scenario_id', 'behavior'), name='points_behavior_rule_once')),
        ops.AddConstraint(model_name='Conversion', constraint=CheckConstraint(check='points > 0 AND grams = points * grams_per_point AND grams <= asked_grams', name='points_conversion_whole_points')),
        ops.AddIndex(model_name='Conversion', index=Index(fields=['participant_id', 'id'])),
        ops.AddConstraint(model_name='ConversionRule', constraint=CheckConstraint(check='grams_per_point > 0', name='points_rule_rate_positive')),
        ops.AddIndex(model_name='ConversionRule', index=Index(fields=['effective_from', 'id'])),
        ops.AddConstraint(model_name='CreditStanding', constraint=CheckConstraint(check='score >= 0 AND score <= 1000', name='points_credit_score_range')),
        ops.AddConstraint(model_name='Experience', constraint=CheckConstraint(check='total >= 0', name='points_experience_not_negative')),
        ops.AddConstraint(model_name='GrowthLevel', constraint=CheckConstraint(check='min_experience >= 0', name='points_level_threshold_not_negative')),
    ]

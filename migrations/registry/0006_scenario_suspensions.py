"""The times each scenario was suspended, so that records which occurred in one earn nothing.

Suspensions made before this migration are read back from the audit trail: each
`scenario.suspend` event opens one, and the scenario's first `scenario.reinstate` after it
closes it (none: the scenario is still suspended).
"""

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

_FROM_AUDIT = """
INSERT INTO registry_scenario_suspension (scenario_id, suspended_at, reinstated_at)
SELECT CAST(s.target_id AS BIGINT), s.created_at,
       (SELECT MIN(r.created_at) FROM audit_event r
        WHERE r.action = 'scenario.reinstate' AND r.target_id = s.target_id
          AND r.created_at >= s.created_at)
FROM audit_event s WHERE s.action = 'scenario.suspend' ORDER BY s.id
"""


async def from_audit(apps, schema_editor) -> None:
    await schema_editor.client.execute_script(_FROM_AUDIT)


async def nothing(apps, schema_editor) -> None:
    """Rolled back with the table itself."""


class Migration(migrations.Migration):
    dependencies = [('registry', '0005_issuances_by_scenario'), ('core', '0005_audit_detail_text')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ScenarioSuspension',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('scenario_id', fields.BigIntField()),
                ('suspended_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('reinstated_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'registry_scenario_suspension', 'app': 'registry', 'indexes': [Index(fields=['scenario_id', 'id'])], 'pk_attr': 'id', 'table_description': 'A time a scenario was suspended: from suspended_at until reinstated_at (None while it still is).'},
            bases=['Model'],
        ),
        ops.RunPython(from_audit, nothing),
    ]

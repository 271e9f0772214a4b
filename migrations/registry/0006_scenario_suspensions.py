"""The times each scenario was suspended, so that records which occurred in one earn nothing.

Suspensions made before this migration are read back from the audit trail: each
`scenario.suspend` event opens one, and the scenario's first `scenario.reinstate` after it
closes it (none: the scenario is still suspended). Records that occurred in one and were
accepted before this migration are not refused any more, but earn nothing when issued
(`registry.settlement`).
"""

from tortoise import fields, migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

# A reinstatement is written after the suspension it ends committed, so it comes later in id
# order, whatever the clocks of the workers that stamped the two said.
_FROM_AUDIT = """
INSERT INTO registry_scenario_suspension (scenario_id, suspended_at, reinstated_at)
SELECT CAST(s.target_id AS BIGINT), s.created_at,
       (SELECT r.created_at FROM audit_event r
        WHERE r.action = 'scenario.reinstate' AND r.target_id = s.target_id AND r.id > s.id
        ORDER BY r.id LIMIT 1)
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
            options={'table': 'registry_scenario_suspension', 'app': 'registry', 'indexes': [Index(fields=['scenario_id', 'id'])], 'pk_attr': 'id', 'table_description': 'One time a scenario was suspended.'},
            bases=['Model'],
        ),
        ops.RunPython(from_audit, nothing),
    ]

"""The growth table: loaded by migration, replaced by center, levels follow at once."""

from __future__ import annotations

from app.audit import AuditEvent
from points.models import Experience, GrowthLevel
from tests.helpers import data, error_codes, gql, op, token
from tests.points_support import CENTER, resident

SET = """mutation($input: SetGrowthLevelsInput!) { setGrowthLevels(input: $input) {
  levels { code name minExperience } userErrors { code field } } }"""
LEVELS = "{ growthLevels { code name minExperience } }"
DEFAULT = [("L1", "绿芽", 0), ("L2", "新叶", 100), ("L3", "小树", 500), ("L4", "大树", 2000),
           ("L5", "森林", 8000), ("L6", "地球卫士", 20000)]


def _table(rows: list[tuple[str, str, int]]) -> dict:
    return {"input": {"levels": [{"code": c, "name": n, "minExperience": m} for c, n, m in rows]}}


async def test_the_default_table_is_loaded_by_migration(client):
    levels = data(await gql(client, LEVELS, auth=token()))["growthLevels"]
    assert [(lv["code"], lv["name"], lv["minExperience"]) for lv in levels] == DEFAULT


async def test_center_replaces_the_table_and_levels_follow_at_once(client):
    _, auth, pid = await resident()
    await Experience.create(participant_id=pid, total=150)
    before = data(await op(client, "MyAccount", {}, auth))["me"]["account"]
    assert before["level"]["code"] == "L2" and before["nextLevel"]["code"] == "L3"
    try:
        payload = data(await gql(client, SET, _table(
            [("S1", "一星", 0), ("S2", "二星", 50), ("S3", "三星", 200)]), CENTER))["setGrowthLevels"]
        assert payload["userErrors"] == [] and len(payload["levels"]) == 3
        after = data(await op(client, "MyAccount", {}, auth))["me"]["account"]
        assert after["level"] == {"code": "S2", "name": "二星", "minExperience": 50}
        assert after["nextLevel"]["code"] == "S3"
        growth = data(await op(client, "MyGrowth", {"first": 1}, auth))["me"]["growth"]
        assert growth["experienceToNextLevel"] == 50
        assert await AuditEvent.filter(action="set_growth_levels").exists()
    finally:
        restored = data(await gql(client, SET, _table(DEFAULT), CENTER))["setGrowthLevels"]
        assert restored["userErrors"] == []


async def test_bad_tables_and_other_roles_are_refused_and_change_nothing(client):
    bad = [
        [],
        [("L1", "a", 10)],
        [("L1", "a", 0), ("L2", "b", 0)],
        [("L1", "a", 0), ("L1", "b", 10)],
        [("L1", "a", 0), ("L2", "b", 30), ("L3", "c", 20)],
        [("L 1", "a", 0)],
    ]
    for rows in bad:
        payload = data(await gql(client, SET, _table(rows), CENTER))["setGrowthLevels"]
        assert payload["levels"] is None
        assert [(e["code"], e["field"]) for e in payload["userErrors"]] == [("INVALID_INPUT", "levels")]
    assert error_codes(await gql(client, SET, _table([("X", "x", 0)]), token())) == ["FORBIDDEN"]
    table = await GrowthLevel.all().order_by("min_experience").values_list(
        "code", "name", "min_experience")
    assert [tuple(r) for r in table] == DEFAULT

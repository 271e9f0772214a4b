"""Credit standing: kept current, explained, flagged and lifted by operations, read by staff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tortoise.transactions import in_transaction

from app.audit import AuditEvent
from app.participants import Participant, organisation_id
from points.credit import current_grade, flush_refreshes, note_voucher_cancellation, refresh_credit
from points.models import (
    CreditSnapshot,
    CreditStanding,
    Experience,
    MisconductFlag,
    VoucherCancellation,
)
from tests.helpers import credit_code, data, error_codes, gql, op, token, unique
from tests.ledger_support import issue_grams
from tests.points_support import (
    CENTER,
    behavior_scenario,
    consent,
    convert,
    event,
    record,
    resident,
    set_rate,
)

STANDING = "{ me { account { creditStanding { score grade updatedAt factors { name contribution } } } } }"
RECORD = """mutation($input: RecordMisconductInput!) { recordMisconduct(input: $input) {
  flag { id kind reason recordedAt liftReason liftedAt } userErrors { code field } } }"""
LIFT = """mutation($input: LiftMisconductInput!) { liftMisconduct(input: $input) {
  flag { id liftReason liftedAt } userErrors { code field } } }"""
STAFF = """query($s: String, $o: String) { participantStanding(subject: $s, orgCode: $o) {
  creditStanding { score grade factors { name contribution } }
  misconductFlags { kind reason liftedAt } } }"""


async def _standing(client, auth: str) -> dict:
    return data(await gql(client, STANDING, auth=auth))["me"]["account"]["creditStanding"]


def _factor(standing: dict, name: str) -> int:
    return {f["name"]: f["contribution"] for f in standing["factors"]}[name]


async def test_a_new_resident_sees_grade_b_and_why(client):
    _, auth, _ = await resident()
    mine = data(await op(client, "MyAccount", {}, auth))["me"]["account"]["creditStanding"]
    assert mine == {"score": 400, "grade": "B"}
    full = await _standing(client, auth)
    assert _factor(full, "base") == 400 and full["updatedAt"]
    assert sum(f["contribution"] for f in full["factors"]) == 400


async def test_history_raises_the_score_even_when_changed_elsewhere(client):
    await set_rate(client, 10)
    _, auth, pid = await resident()
    await _standing(client, auth)
    await issue_grams(pid, 50_000)  # an issuance that never called refresh_credit
    after_issue = await _standing(client, auth)
    assert _factor(after_issue, "reductions_earned") == 10
    assert after_issue["score"] == 410
    await convert(client, auth, 10_000)
    await flush_refreshes()  # so the read below does not race the refresh to the same snapshot
    after_convert = await _standing(client, auth)
    assert _factor(after_convert, "points_earned") == 20
    assert after_convert["score"] == 430
    snapshots = await CreditSnapshot.filter(participant_id=pid).order_by("id").values_list(
        "score", flat=True)
    assert snapshots == [400, 410, 430]


async def test_operations_flag_and_lift_misconduct_with_reasons(client):
    subject, auth, pid = await resident()
    variables = {"input": {"subject": subject, "kind": "FRAUDULENT_RECORDS",
                           "reason": "Records rejected as fabricated by review 2026-17"}}
    recorded = data(await gql(client, RECORD, variables, CENTER))["recordMisconduct"]
    assert recorded["userErrors"] == [] and recorded["flag"]["liftedAt"] is None
    await flush_refreshes()  # a flag leaves the balances as they were: read once it is stored
    flagged = await _standing(client, auth)
    assert (flagged["score"], flagged["grade"]) == (150, "C")
    assert _factor(flagged, "fraudulent_records") == -250
    assert await current_grade(pid) == "C"
    assert await AuditEvent.filter(action="record_misconduct", target_id=str(pid)).exists()

    lift = {"input": {"flagId": recorded["flag"]["id"], "reason": "Appeal upheld"}}
    lifted = data(await gql(client, LIFT, lift, CENTER))["liftMisconduct"]
    assert lifted["userErrors"] == [] and lifted["flag"]["liftReason"] == "Appeal upheld"
    await flush_refreshes()
    assert (await _standing(client, auth))["score"] == 400
    again = data(await gql(client, LIFT, lift, CENTER))["liftMisconduct"]
    assert [e["code"] for e in again["userErrors"]] == ["INVALID_STATE"]
    assert await AuditEvent.filter(action="lift_misconduct", target_id=str(pid)).count() == 1


async def test_misconduct_refusals_change_nothing(client):
    subject, auth, pid = await resident()
    good = {"subject": subject, "kind": "OTHER", "reason": "x"}
    cases = [
        ({**good, "reason": "   "}, "INVALID_INPUT"),
        ({**good, "subject": "nobody-" + unique()}, "NOT_FOUND"),
        ({"kind": "OTHER", "reason": "x"}, "INVALID_INPUT"),
        ({**good, "orgCode": credit_code()}, "INVALID_INPUT"),
    ]
    for variables, code in cases:
        payload = data(await gql(client, RECORD, {"input": variables}, CENTER))["recordMisconduct"]
        assert [e["code"] for e in payload["userErrors"]] == [code]
    assert error_codes(await gql(client, RECORD, {"input": good}, auth)) == ["FORBIDDEN"]
    bad_id = data(await gql(client, LIFT, {"input": {"flagId": "nope", "reason": "r"}}, CENTER))
    assert [e["code"] for e in bad_id["liftMisconduct"]["userErrors"]] == ["INVALID_INPUT"]
    assert not await MisconductFlag.filter(participant_id=pid).exists()


async def test_staff_reads_are_audited_and_residents_cannot_read_others(client):
    subject, _, pid = await resident()
    org = credit_code()
    org_id = await organisation_id(org)
    await gql(client, RECORD, {"input": {"orgCode": org, "kind": "VOUCHER_ABUSE",
                                         "reason": "Serial cancellations"}}, CENTER)
    seen = data(await gql(client, STAFF, {"s": subject}, CENTER))["participantStanding"]
    assert seen["creditStanding"]["score"] == 400 and seen["misconductFlags"] == []
    regulator = token("reg-1", "regulator")
    by_org = data(await gql(client, STAFF, {"o": org}, regulator))["participantStanding"]
    assert by_org["creditStanding"]["score"] == 280
    assert [f["kind"] for f in by_org["misconductFlags"]] == ["VOUCHER_ABUSE"]
    assert await AuditEvent.filter(action="read_credit_standing", target_id=str(pid),
                                   actor_subject="center-ops").exists()
    assert await AuditEvent.filter(action="read_credit_standing", target_id=str(org_id),
                                   actor_subject="reg-1").exists()
    for auth in (token(), token(roles="merchant", org=credit_code())):
        assert error_codes(await gql(client, STAFF, {"s": subject}, auth)) == ["FORBIDDEN"]
    missing = await gql(client, STAFF, {"s": "nobody-" + unique()}, CENTER)
    assert error_codes(missing) == ["NOT_FOUND"]


async def _cancel_vouchers(pid: int, times: int) -> None:
    """Note `times` voucher cancellations by the participant and refresh the standing."""
    for _ in range(times):
        async with in_transaction() as conn:
            await note_voucher_cancellation(pid, conn)
    await refresh_credit(pid)
    await flush_refreshes()


async def test_repeated_voucher_cancellations_lower_the_standing(database):
    _, _, pid = await resident()
    await _cancel_vouchers(pid, 5)
    row = await CreditStanding.get(participant_id=pid)
    assert dict(map(tuple, row.factors))["voucher_cancellations"] == -50
    assert row.score == 350 and await current_grade(pid) == "C"


async def test_cancellations_older_than_30_days_stop_counting_though_nothing_else_changes(client):
    _, auth, pid = await resident()
    await _cancel_vouchers(pid, 5)
    assert (await _standing(client, auth))["score"] == 350 and await current_grade(pid) == "C"
    # A month on: the cancellations leave the window; no balance or experience changes.
    await VoucherCancellation.filter(participant_id=pid).update(
        created_at=datetime.now(UTC) - timedelta(days=31))
    mine = await _standing(client, auth)
    assert (mine["score"], mine["grade"], _factor(mine, "voucher_cancellations")) == (400, "B", 0)
    assert await current_grade(pid) == "B"
    staff = data(await gql(client, STAFF, {"s": (await Participant.get(id=pid)).subject}, CENTER))
    assert staff["participantStanding"]["creditStanding"]["score"] == 400


async def test_current_grade_answers_for_a_participant_never_computed(database):
    _, _, pid = await resident()
    assert await current_grade(pid) == "B"
    assert await CreditStanding.filter(participant_id=pid).exists()


async def test_experience_counts_and_a_stale_standing_is_never_served(client):
    _, auth, pid = await resident()
    assert (await _standing(client, auth))["score"] == 400
    await Experience.create(participant_id=pid, total=400)  # written without a refresh
    standing = await _standing(client, auth)
    assert _factor(standing, "experience") == 20 and standing["score"] == 420


async def test_a_batch_refreshes_every_participant_it_touched(client):
    code, _, operator = await behavior_scenario(client, [("recycle", 100, 1000)])
    people = [await resident() for _ in range(5)]
    for _, _, pid in people:
        await consent(pid, code)
    payload = await record(client, operator, code, [event(s, "recycle") for s, _, _ in people])
    assert payload["accepted"] == 5
    await flush_refreshes()
    rows = await CreditStanding.filter(participant_id__in=[p for _, _, p in people])
    assert len(rows) == 5
    assert all(dict(map(tuple, r.factors))["experience"] == 5 and r.experience_mark == 100
               for r in rows)

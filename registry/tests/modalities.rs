//! Cash-for-work and shelter on a real database (SQLite, or PostgreSQL with
//! `CVA_TEST_DATABASE_URL`): attendance sheets (good, repeated, clashing, bad, unknown household)
//! turned into capped cash-for-work entitlements, and shelter tranches released by milestones
//! verified by a second person.

#![allow(clippy::unwrap_used)]

use chrono::NaiveDate;
use cva_households::import::ColumnMapping;
use cva_households::msisdn::OperatorTable;
use cva_households::pii::PiiKeys;
use cva_ledger::audit::{AuditContext, AuditQuery};
use cva_ledger::testing::{assert_books_sound, bal, entry_count, TestDb};
use cva_programmes::rules::{Modality, Rule};
use cva_registry::households::{HouseholdQuery, Reveal, StatusAction};
use cva_registry::programmes::NewProgramme;
use cva_registry::{Registry, RegistryError};

const P: &str = "MLI-CFW-24";
const HEADER: &str = "start,end,today,enumerator,consent,household/head_name,household/head_sex,household/head_birth_year,household/size,household/displacement_status,location/region,location/cercle,location/commune,contact/msisdn,identity/national_id,identity/biometric_ref,_id,_uuid,_submission_time,_index";
const CYCLE: &str = "2024-03";

fn ctx(actor: &str) -> AuditContext {
    AuditContext {
        actor_id: None,
        actor: actor.into(),
        role: "programme_officer".into(),
        request_id: "test".into(),
    }
}

fn submission(n: u32) -> String {
    format!("6f1c2a4e-8d3b-4c5a-9e7f-{n:012}")
}

fn kobo_row(n: u32, name: &str, commune: &str, msisdn: &str) -> String {
    format!(
        "2024-03-01T08:00:00,2024-03-01T08:20:00,2024-03-01,enum-01,yes,{name},male,1978,4,host,{},{},{commune},{msisdn},,,{n},{},2024-03-01T10:22:33,{n}",
        &commune[..4],
        &commune[..6],
        submission(n),
    )
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, d).unwrap()
}

/// A programme with a cash-for-work and a shelter line (both funded) and their rules, and three
/// households enrolled by `officer` and verified by `checker`. Returns their ids, in order.
async fn setup() -> (TestDb, Registry, Vec<i64>) {
    let db = TestDb::new().await;
    let (keys, _) = PiiKeys::generate();
    let reg = Registry::new(
        db.ledger.clone(),
        keys,
        OperatorTable::default_table(),
        "223",
    );
    let admin = ctx("admin");
    reg.create_programme(
        NewProgramme {
            code: P.into(),
            name: "CFW and shelter Mopti 2024".into(),
            donor: "ECHO".into(),
            grant_ref: "ECHO/-WF/BUD/2024/91012".into(),
            currency: "XOF".into(),
            reporting_currency: "EUR".into(),
            starts_on: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            ends_on: NaiveDate::from_ymd_opt(2024, 12, 31).unwrap(),
            regions: vec!["ML05".into()],
        },
        &admin,
    )
    .await
    .unwrap();
    reg.add_budget_line(P, "cfw", Modality::CashForWork, "1000000", &admin)
        .await
        .unwrap();
    reg.add_budget_line(P, "shelter", Modality::Shelter, "1000000", &admin)
        .await
        .unwrap();
    let cfw = Rule::from_json(
        r#"{"modality":"cash_for_work","daily_rate":2500,"max_days_per_cycle":20,
            "max_amount_per_household":45000,"rounding":{"unit":25,"mode":"nearest"}}"#,
    )
    .unwrap();
    assert_eq!(reg.add_rule(P, cfw, &admin).await.unwrap(), 1);
    let shelter = Rule::from_json(
        r#"{"modality":"shelter","total":150000,"tranches":[{"percent":"40"},
            {"percent":"40","condition":"walls"},{"percent":"20","condition":"roof"}],
            "rounding":{"unit":5,"mode":"nearest"}}"#,
    )
    .unwrap();
    assert_eq!(reg.add_rule(P, shelter, &admin).await.unwrap(), 1);

    let mut csv = String::from(HEADER);
    for r in [
        kobo_row(1, "Boubacar Sangaré", "ML050101", "+223 76 11 22 33"),
        kobo_row(2, "Fatoumata Dembélé", "ML050102", "+223 66 44 55 66"),
        kobo_row(3, "Ibrahim Touré", "ML050101", ""),
    ] {
        csv.push('\n');
        csv.push_str(&r);
    }
    csv.push('\n');
    let r = reg
        .import_households(
            P,
            csv.as_bytes(),
            &ColumnMapping::kobo_default(),
            false,
            &ctx("officer"),
        )
        .await
        .unwrap();
    assert_eq!((r.created, r.flags.households_flagged), (3, 0), "{r:?}");
    let q = HouseholdQuery {
        limit: 10,
        ..Default::default()
    };
    let mut ids = Vec::new();
    for h in reg.households(P, &q, Reveal::Full).await.unwrap() {
        reg.set_status(h.id, StatusAction::Verify, None, &ctx("checker"))
            .await
            .unwrap();
        ids.push(h.id);
    }
    let finance = ctx("finance");
    reg.fund_budget_line(P, "cfw", "500000", "ECHO-TT-CFW", day(1), &finance)
        .await
        .unwrap();
    reg.fund_budget_line(P, "shelter", "500000", "ECHO-TT-SH", day(1), &finance)
        .await
        .unwrap();
    (db, reg, ids)
}

/// An attendance sheet: (household number, worker, first day, days present in a row).
fn sheet(work: &[(u32, u32, u32, u32)]) -> Vec<u8> {
    let mut s = String::from("household_id;worker;date;site;present\n");
    for &(n, worker, first, count) in work {
        for d in first..first + count {
            s.push_str(&format!(
                "{};{worker};2024-03-{d:02};water point Sévaré 3;oui\n",
                submission(n)
            ));
        }
    }
    s.into_bytes()
}

/// Household 1: workers of 12 and 10 days; household 2: one worker of 5 days.
fn march_sheet() -> Vec<u8> {
    sheet(&[(1, 1, 1, 12), (1, 2, 5, 10), (2, 1, 10, 5)])
}

async fn events(db: &TestDb, action: &str) -> usize {
    db.ledger
        .audit_events(&AuditQuery {
            action: Some(action.into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

async fn import(
    reg: &Registry,
    bytes: &[u8],
) -> Result<cva_registry::cfw::AttendanceReport, RegistryError> {
    reg.import_attendance(P, CYCLE, day(1), day(31), bytes, &ctx("officer"))
        .await
}

#[tokio::test]
async fn attendance_becomes_capped_cash_for_work_entitlements() {
    let (db, reg, ids) = setup().await;
    let r = import(&reg, &march_sheet()).await.unwrap();
    assert_eq!(
        (
            r.cycle.as_str(),
            r.households,
            r.workers,
            r.days,
            r.unchanged
        ),
        (CYCLE, 2, 3, 27, false),
        "{r:?}"
    );
    assert_eq!(r.sheet_sha256.len(), 64);
    assert_eq!(events(&db, "cfw.attendance").await, 1);

    // The same sheet again: nothing changes, nothing is audited.
    let again = import(&reg, &march_sheet()).await.unwrap();
    assert!(again.unchanged);
    assert_eq!(again.sheet_sha256, r.sheet_sha256);
    assert_eq!(events(&db, "cfw.attendance").await, 1);

    // Household 1: 22 days capped to 20 → 50,000 → capped to 45,000; household 2: 5 × 2,500.
    // Household 3 worked no day: nothing.
    let g = reg
        .generate_entitlements(P, CYCLE, Modality::CashForWork, day(31), &ctx("checker"))
        .await
        .unwrap();
    assert_eq!(
        (g.created, g.amount, g.rule_version),
        (2, 57_500, 1),
        "{g:?}"
    );
    let acc = |id: i64| format!("liabilities:entitlements:{P}:hh-{id}");
    assert_eq!(bal(&db.ledger, &acc(ids[0])).await, 45_000);
    assert_eq!(bal(&db.ledger, &acc(ids[1])).await, 12_500);
    assert_eq!(bal(&db.ledger, &acc(ids[2])).await, 0);
    assert_eq!(bal(&db.ledger, &format!("funds:{P}:cfw")).await, 442_500);
    for (id, amount) in [(ids[0], 45_000), (ids[1], 12_500)] {
        let e = reg.entitlements(id).await.unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(
            (
                e[0].modality.as_str(),
                e[0].amount,
                e[0].rule_version,
                e[0].tranche
            ),
            ("cash_for_work", amount, 1, 1)
        );
    }
    assert!(reg.entitlements(ids[2]).await.unwrap().is_empty());

    // Days for a household already paid for the cycle could never be paid: refused.
    let late = import(&reg, &sheet(&[(1, 3, 1, 4)])).await.unwrap_err();
    assert!(matches!(late, RegistryError::Conflict(_)), "{late}");
    let again = reg
        .generate_entitlements(P, CYCLE, Modality::CashForWork, day(31), &ctx("checker"))
        .await
        .unwrap();
    assert_eq!((again.created, again.already_granted), (0, 2));
    assert_books_sound(&db.ledger).await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_clashing_bad_or_unknown_sheet_writes_nothing() {
    let (db, reg, ids) = setup().await;
    import(&reg, &march_sheet()).await.unwrap();

    // Another sheet naming household 2's worker 1 again (and household 3, new): refused whole.
    let clash = import(&reg, &sheet(&[(3, 1, 1, 8), (2, 1, 20, 6)]))
        .await
        .unwrap_err();
    let RegistryError::Conflict(msg) = &clash else {
        panic!("{clash}")
    };
    assert!(
        msg.contains(&format!("household {}, worker 1", ids[1]))
            && msg.contains("already recorded from another sheet"),
        "{msg}"
    );

    // Bad rows: a day outside the cycle (row 3) and worker 21 (row 4); nothing is written.
    let mut bad = String::from_utf8(sheet(&[(3, 1, 1, 1)])).unwrap();
    bad.push_str(&format!("{};1;2024-04-02;;oui\n", submission(3)));
    bad.push_str(&format!("{};21;2024-03-02;;oui\n", submission(3)));
    let err = import(&reg, bad.as_bytes()).await.unwrap_err();
    let RegistryError::BadRows(errors) = err else {
        panic!("{err}")
    };
    let rows: Vec<(usize, &str)> = errors.iter().map(|e| (e.row, e.column.as_str())).collect();
    assert!(rows.contains(&(3, "date")), "{errors:?}");
    assert!(rows.contains(&(4, "worker")), "{errors:?}");

    // A household that is not one of the programme's: a row error naming the submission.
    let stranger = submission(99);
    let err = import(&reg, &sheet(&[(3, 1, 1, 3), (99, 1, 1, 3)]))
        .await
        .unwrap_err();
    let RegistryError::BadRows(errors) = err else {
        panic!("{err}")
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].row, errors[0].column.as_str()),
        (0, "household_id")
    );
    assert!(errors[0].reason.contains(&stranger), "{errors:?}");

    // Only the first sheet counts: household 3 got nothing, household 2 still 5 days.
    assert_eq!(events(&db, "cfw.attendance").await, 1);
    let before = entry_count(&db.ledger).await;
    let g = reg
        .generate_entitlements(P, CYCLE, Modality::CashForWork, day(31), &ctx("checker"))
        .await
        .unwrap();
    assert_eq!((g.created, g.amount), (2, 57_500), "{g:?}");
    assert!(reg.entitlements(ids[2]).await.unwrap().is_empty());
    assert_eq!(entry_count(&db.ledger).await, before + 2);
    assert_books_sound(&db.ledger).await;
    db.cleanup().await;
}

#[tokio::test]
async fn shelter_tranches_follow_milestones_verified_by_someone_else() {
    let (db, reg, ids) = setup().await;
    let cycle = "shelter-2024";
    let generate = || async {
        reg.generate_entitlements(P, cycle, Modality::Shelter, day(31), &ctx("checker"))
            .await
            .unwrap()
    };
    // No milestone yet: the unconditional first tranche only, 40 % of 150,000.
    let g = generate().await;
    assert_eq!((g.created, g.amount), (3, 180_000), "{g:?}");

    let hh = ids[0];
    let (a, b) = (ctx("officer-a"), ctx("officer-b"));
    let m = reg
        .report_milestone(hh, "walls", day(20), &a)
        .await
        .unwrap();
    assert_eq!(
        (m.milestone.as_str(), m.reported_on, m.reported_by.as_str()),
        ("walls", day(20), "officer-a")
    );
    assert_eq!((m.verified_by, m.verified_at), (None, None));
    let twice = reg
        .report_milestone(hh, "walls", day(21), &b)
        .await
        .unwrap_err();
    assert!(matches!(twice, RegistryError::Conflict(_)), "{twice}");
    let bad = reg
        .report_milestone(hh, "Walls!", day(20), &a)
        .await
        .unwrap_err();
    assert!(matches!(bad, RegistryError::Invalid { .. }), "{bad}");

    // Reported, not verified: it does not count.
    assert_eq!(generate().await.created, 0);

    // Maker-checker: the reporter cannot verify; the database refuses it too.
    let same = reg.verify_milestone(hh, "walls", &a).await.unwrap_err();
    assert!(matches!(same, RegistryError::SamePerson(_)), "{same}");
    let refused = db
        .raw(&["UPDATE milestones SET verified_by = reported_by"])
        .await;
    assert!(refused.is_err());
    let v = reg.verify_milestone(hh, "walls", &b).await.unwrap();
    assert_eq!(v.verified_by.as_deref(), Some("officer-b"));
    assert!(v.verified_at.is_some());
    let again = reg.verify_milestone(hh, "walls", &b).await.unwrap_err();
    assert!(matches!(again, RegistryError::Conflict(_)), "{again}");

    // Tranche 2 for that household only; tranche 1 was already granted to all three.
    let g = generate().await;
    assert_eq!(
        (g.created, g.already_granted, g.amount),
        (1, 3, 60_000),
        "{g:?}"
    );

    reg.report_milestone(hh, "roof", day(28), &b).await.unwrap();
    reg.verify_milestone(hh, "roof", &a).await.unwrap();
    let g = generate().await;
    assert_eq!((g.created, g.amount), (1, 30_000), "{g:?}");

    let amounts: Vec<(i32, i64)> = reg
        .entitlements(hh)
        .await
        .unwrap()
        .iter()
        .map(|e| (e.tranche, e.amount))
        .collect();
    assert_eq!(amounts, vec![(1, 60_000), (2, 60_000), (3, 30_000)]);
    assert_eq!(
        bal(&db.ledger, &format!("liabilities:entitlements:{P}:hh-{hh}")).await,
        150_000
    );
    assert_eq!(
        bal(&db.ledger, &format!("funds:{P}:shelter")).await,
        230_000
    );
    let list = reg.milestones(hh).await.unwrap();
    let names: Vec<&str> = list.iter().map(|m| m.milestone.as_str()).collect();
    assert_eq!(names, ["walls", "roof"]);
    assert!(reg.milestones(ids[1]).await.unwrap().is_empty());
    assert_eq!(events(&db, "milestone.report").await, 2);
    assert_eq!(events(&db, "milestone.verify").await, 2);
    assert_books_sound(&db.ledger).await;
    db.cleanup().await;
}

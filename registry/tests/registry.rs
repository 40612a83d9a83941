//! The registry on a real database (SQLite, or PostgreSQL with `CVA_TEST_DATABASE_URL`):
//! programmes and budgets, imports (good, bad, repeated, dry run), four-eyes verification,
//! duplicate flags and their adjudication, entitlements under budget control, and personal data
//! never stored in plaintext.

#![allow(clippy::unwrap_used)]

use chrono::NaiveDate;
use cva_households::import::ColumnMapping;
use cva_households::msisdn::OperatorTable;
use cva_households::pii::PiiKeys;
use cva_ledger::audit::AuditContext;
use cva_ledger::testing::{assert_books_sound, bal, entry_count, TestDb};
use cva_programmes::rules::{Modality, Rule};
use cva_registry::flags::Decision;
use cva_registry::households::{HouseholdQuery, Reveal, Status, StatusAction};
use cva_registry::programmes::NewProgramme;
use cva_registry::{Registry, RegistryError};

const P: &str = "MLI-MPCA-24";
const HEADER: &str = "start,end,today,enumerator,consent,household/head_name,household/head_sex,household/head_birth_year,household/size,household/displacement_status,location/region,location/cercle,location/commune,contact/msisdn,identity/national_id,identity/biometric_ref,_id,_uuid,_submission_time,_index";

fn ctx(actor: &str) -> AuditContext {
    AuditContext {
        actor_id: None,
        actor: actor.into(),
        role: "programme_officer".into(),
        request_id: "test".into(),
    }
}

/// One Kobo row; `n` makes the `_uuid` unique.
fn row(n: u32, name: &str, size: u32, commune: &str, msisdn: &str, nid: &str) -> String {
    let cercle = &commune[..6];
    let region = &commune[..4];
    format!(
        "2024-03-01T08:00:00,2024-03-01T08:20:00,2024-03-01,enum-01,yes,{name},female,1980,{size},idp,{region},{cercle},{commune},{msisdn},{nid},,{n},6f1c2a4e-8d3b-4c5a-9e7f-{n:012},2024-03-01T10:22:33,{n}"
    )
}

fn file(rows: &[String]) -> Vec<u8> {
    let mut s = String::from(HEADER);
    for r in rows {
        s.push('\n');
        s.push_str(r);
    }
    s.push('\n');
    s.into_bytes()
}

/// Six households: 1 and 2 share a national ID; 3 and 4 share a phone; 5 is a spelling
/// variant of 1 in the same commune; 6 stands alone.
fn six() -> Vec<String> {
    vec![
        row(
            1,
            "Aminata Traoré",
            5,
            "ML050101",
            "+223 76 12 34 56",
            "NINA0000000001A",
        ),
        row(
            2,
            "Aminata Traore",
            7,
            "ML070101",
            "+223 66 00 00 02",
            "NINA0000000001A",
        ),
        row(3, "Moussa Diarra", 4, "ML050101", "76.00.00.03", ""),
        row(4, "Oumar Keïta", 6, "ML050102", "0022376000003", ""),
        row(5, "Aminata Traoré Z", 6, "ML050101", "", ""),
        row(
            6,
            "Seydou Coulibaly",
            3,
            "ML050102",
            "90 00 00 06",
            "NINA0000000006F",
        ),
    ]
}

async fn setup() -> (TestDb, Registry) {
    let db = TestDb::new().await;
    let (keys, _) = PiiKeys::generate();
    let reg = Registry::new(
        db.ledger.clone(),
        keys,
        OperatorTable::default_table(),
        "223",
    );
    reg.create_programme(
        NewProgramme {
            code: P.into(),
            name: "MPCA Mopti 2024".into(),
            donor: "ECHO".into(),
            grant_ref: "ECHO/-WF/BUD/2024/91011".into(),
            currency: "XOF".into(),
            reporting_currency: "EUR".into(),
            starts_on: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            ends_on: NaiveDate::from_ymd_opt(2024, 12, 31).unwrap(),
            regions: vec!["ML05".into(), "ML07".into()],
        },
        &ctx("admin"),
    )
    .await
    .unwrap();
    reg.add_budget_line(P, "mpca", Modality::Mpca, "1000000", &ctx("admin"))
        .await
        .unwrap();
    let rule = Rule::from_json(
        r#"{"modality":"mpca","amount":{"kind":"by_size","bands":[
            {"min_size":1,"max_size":4,"amount":50010},{"min_size":5,"max_size":null,"amount":75000}]},
            "tranches":2,"rounding":{"unit":25,"mode":"nearest"}}"#,
    )
    .unwrap();
    assert_eq!(reg.add_rule(P, rule, &ctx("admin")).await.unwrap(), 1);
    (db, reg)
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()
}

async fn household_count(reg: &Registry) -> usize {
    let q = HouseholdQuery {
        limit: 1000,
        ..HouseholdQuery::default()
    };
    reg.households(P, &q, Reveal::Full).await.unwrap().len()
}

#[tokio::test]
async fn import_flags_verify_and_grant() {
    let (db, reg) = setup().await;
    let officer = ctx("officer");
    let r = reg
        .import_households(
            P,
            &file(&six()),
            &ColumnMapping::kobo_default(),
            false,
            &officer,
        )
        .await
        .unwrap();
    assert_eq!((r.rows, r.created, r.unchanged), (6, 6, 0));
    assert_eq!(r.flags.same_national_id, 1);
    assert_eq!(r.flags.shared_phone, 1);
    assert_eq!(r.flags.similar_name, 1, "{:?}", r.flags);

    // Re-importing the same file creates nothing.
    let again = reg
        .import_households(
            P,
            &file(&six()),
            &ColumnMapping::kobo_default(),
            false,
            &officer,
        )
        .await
        .unwrap();
    assert_eq!((again.created, again.unchanged), (0, 6));
    assert_eq!(household_count(&reg).await, 6);

    // Views: opened for programme staff, masked for others; phone numbers normalised.
    let list = reg
        .households(
            P,
            &HouseholdQuery {
                limit: 10,
                ..Default::default()
            },
            Reveal::Full,
        )
        .await
        .unwrap();
    assert_eq!(list[0].head_name, "Aminata Traoré");
    assert_eq!(list[0].msisdn.as_deref(), Some("+22376123456"));
    assert_eq!(list[0].operator.as_deref(), Some("orange-ml"));
    assert_eq!(list[2].msisdn.as_deref(), Some("+22376000003"));
    let masked = reg.household(list[0].id, Reveal::Masked).await.unwrap();
    assert!(masked.masked);
    assert!(!masked.head_name.contains("Aminata"));
    assert!(masked.msisdn.as_deref().unwrap().ends_with("34 56"));
    assert!(!masked.msisdn.as_deref().unwrap().contains("7612"));

    // Four eyes: whoever imported cannot verify; someone else can.
    let ids: Vec<i64> = list.iter().map(|h| h.id).collect();
    let err = reg
        .set_status(ids[5], StatusAction::Verify, None, &officer)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::SamePerson(_)), "{err}");
    let checker = ctx("checker");
    for id in &ids {
        let h = reg
            .set_status(*id, StatusAction::Verify, None, &checker)
            .await
            .unwrap();
        assert_eq!(h.status, Status::Verified);
        assert_eq!(h.verified_by.as_deref(), Some("checker"));
    }
    // The database refuses a same-person verification even from SQL.
    let refused = db
        .raw(&[&format!(
            "UPDATE households SET verified_by = enrolled_by WHERE id = {}",
            ids[0]
        )])
        .await;
    assert!(refused.is_err());

    // Not funded yet: the whole cycle is refused and the ledger is unchanged.
    let before = entry_count(&db.ledger).await;
    let err = reg
        .generate_entitlements(P, "2024-03", Modality::Mpca, date(), &checker)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::BudgetExceeded {
                funded_limit: true,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(entry_count(&db.ledger).await, before);

    reg.fund_budget_line(P, "mpca", "1000000", "ECHO-TT-1", date(), &ctx("finance"))
        .await
        .unwrap();
    // Only household 6 is verified without an open flag (1/2/5 and 3/4 are flagged).
    let g = reg
        .generate_entitlements(P, "2024-03", Modality::Mpca, date(), &checker)
        .await
        .unwrap();
    assert_eq!(
        (g.eligible_households, g.flagged, g.created),
        (1, 5, 2),
        "{g:?}"
    );
    // Size 3 → band 50,010 rounded to the nearest 25 → 50,000, two tranches.
    assert_eq!(g.amount, 100_000);
    // One audit event for the run, written with it.
    let runs = |db: &TestDb| {
        let q = cva_ledger::audit::AuditQuery {
            action: Some("entitlements.generate".into()),
            limit: 100,
            ..Default::default()
        };
        let l = db.ledger.clone();
        async move { l.audit_events(&q).await.unwrap().len() }
    };
    assert_eq!(runs(&db).await, 1);
    let acc = format!("liabilities:entitlements:{P}:hh-{}", ids[5]);
    assert_eq!(bal(&db.ledger, &acc).await, 100_000);
    assert_eq!(bal(&db.ledger, &format!("funds:{P}:mpca")).await, 900_000);

    // Adjudicate: 1 and 2 are the same person (keep 1); 3 and 4 share a phone but are distinct;
    // 5 is distinct from 1.
    let flags = reg.flags(P, true).await.unwrap();
    assert_eq!(flags.len(), 3);
    for f in &flags {
        let d = match f.kind.as_str() {
            "same_national_id" => Decision::Duplicate {
                keep: f.household_a,
                reason: "same NINA, re-registered in Gao".into(),
            },
            _ => Decision::Distinct {
                reason: "different households, checked on site".into(),
            },
        };
        reg.adjudicate(f.id, &d, &checker).await.unwrap();
    }
    assert!(reg.flags(P, true).await.unwrap().is_empty());
    let dup = reg.household(ids[1], Reveal::Full).await.unwrap();
    assert_eq!(dup.status, Status::Withdrawn);

    // Idempotent: household 6 is not granted twice; the others now are.
    let g2 = reg
        .generate_entitlements(P, "2024-03", Modality::Mpca, date(), &checker)
        .await
        .unwrap();
    assert_eq!(
        (g2.eligible_households, g2.already_granted, g2.created),
        (5, 2, 8),
        "{g2:?}"
    );
    let g3 = reg
        .generate_entitlements(P, "2024-03", Modality::Mpca, date(), &checker)
        .await
        .unwrap();
    assert_eq!((g3.created, g3.already_granted), (0, 10));
    assert_eq!(
        runs(&db).await,
        2,
        "a run that creates nothing records nothing"
    );

    // Cancel one: its entry is reversed and the household is owed less.
    let ents = reg.entitlements(ids[5]).await.unwrap();
    assert_eq!(ents.len(), 2);
    assert_eq!(ents[0].rule_version, 1);
    let c = reg
        .cancel_entitlement(ents[0].id, "household left the area", &checker)
        .await
        .unwrap();
    assert_eq!(c.status, "cancelled");
    assert_eq!(bal(&db.ledger, &acc).await, 50_000);
    assert!(reg
        .cancel_entitlement(ents[0].id, "again", &checker)
        .await
        .is_err());

    // The database refuses an entitlement for a household that is not verified.
    let withdrawn = ids[1];
    let refused = db
        .raw(&[&format!(
            "INSERT INTO entitlements (household_id, programme_id, budget_line_id, modality, cycle, tranche, amount, currency, rule_version, entry_id, created_at, created_by) \
             SELECT {withdrawn}, programme_id, id, 'mpca', '2024-04', 1, 5, 'XOF', 1, {uuid}, {now}, 'sql' FROM budget_lines",
            uuid = if db.is_postgres() { "'018f0000-0000-7000-8000-000000000001'::uuid" } else { "x'018f0000000070008000000000000001'" },
            now = if db.is_postgres() { "now()" } else { "'2024-03-01T00:00:00Z'" },
        )])
        .await;
    assert!(refused.unwrap_err().contains("not verified"));

    // What an entitlement is never changes, a cancelled one stays cancelled, and households are
    // neither deleted nor moved (whatever SQL is run).
    let granted = ents[1].id;
    let cancelled = ents[0].id;
    for (sql, why) in [
        (format!("UPDATE entitlements SET amount = 1 WHERE id = {granted}"), "only changes from granted to cancelled"),
        (format!("UPDATE entitlements SET household_id = {} WHERE id = {granted}", ids[0]), "only changes from granted to cancelled"),
        (format!("UPDATE entitlements SET status = 'granted', cancel_entry_id = NULL WHERE id = {cancelled}"), "only changes from granted to cancelled"),
        (format!("DELETE FROM households WHERE id = {}", ids[5]), "DELETE refused"),
        (format!("UPDATE households SET programme_id = programme_id + 1 WHERE id = {}", ids[5]), "never change"),
        (format!(
            "INSERT INTO entitlements (household_id, programme_id, budget_line_id, modality, cycle, tranche, amount, currency, rule_version, entry_id, created_at, created_by) \
             SELECT {hh}, programme_id, id + 1000, 'mpca', '2024-05', 1, 5, 'XOF', 1, {uuid}, {now}, 'sql' FROM budget_lines",
            hh = ids[5],
            uuid = if db.is_postgres() { "'018f0000-0000-7000-8000-000000000002'::uuid" } else { "x'018f0000000070008000000000000002'" },
            now = if db.is_postgres() { "now()" } else { "'2024-03-01T00:00:00Z'" },
        ), "not one of the entitlement's programme"),
    ] {
        let err = db.raw(&[&sql]).await.expect_err(&sql);
        assert!(err.contains(why), "{sql}: {err}");
    }
    assert_untouched(&reg, ids[5]).await;
    assert_books_sound(&db.ledger).await;
    db.cleanup().await;
}

/// The household's two entitlements are as the test left them: one cancelled, one granted.
async fn assert_untouched(reg: &Registry, household: i64) {
    let e = reg.entitlements(household).await.unwrap();
    assert_eq!(
        e.iter()
            .map(|e| (e.status.as_str(), e.amount, e.household_id))
            .collect::<Vec<_>>(),
        [
            ("cancelled", 50_000, household),
            ("granted", 50_000, household)
        ]
    );
}

#[tokio::test]
async fn a_bad_file_writes_nothing_and_a_dry_run_rolls_back() {
    let (db, reg) = setup().await;
    let mut rows = six();
    rows[1] = row(2, "Aminata Traore", 0, "ML070101", "+223 66 00 00 02", "");
    rows[3] = row(4, "Oumar Keïta", 6, "ML050102", "+223 55 00 00 03", "");
    rows[4] = row(5, "Awa", 6, "ML060101", "", "").replace(",ML06,ML0601,", ",ML05,ML0501,");
    let audit_before = db
        .ledger
        .audit_events(&cva_ledger::audit::AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    let err = reg
        .import_households(
            P,
            &file(&rows),
            &ColumnMapping::kobo_default(),
            false,
            &ctx("officer"),
        )
        .await
        .unwrap_err();
    let RegistryError::BadRows(errors) = err else {
        panic!("{err}")
    };
    let cells: Vec<(usize, &str)> = errors.iter().map(|e| (e.row, e.column.as_str())).collect();
    assert!(cells.contains(&(3, "household/size")), "{errors:?}");
    assert!(cells.contains(&(5, "contact/msisdn")), "{errors:?}");
    assert!(cells.iter().any(|(r, _)| *r == 6), "{errors:?}");
    for e in &errors {
        assert!(!e.reason.contains("55 00"), "no personal data in errors");
    }
    assert_eq!(household_count(&reg).await, 0);
    let audit_after = db
        .ledger
        .audit_events(&cva_ledger::audit::AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(audit_before, audit_after);

    let dry = reg
        .import_households(
            P,
            &file(&six()),
            &ColumnMapping::kobo_default(),
            true,
            &ctx("officer"),
        )
        .await
        .unwrap();
    assert!(dry.dry_run);
    assert_eq!((dry.created, dry.flags.same_national_id), (6, 1));
    assert_eq!(dry.import_id, None);
    assert_eq!(household_count(&reg).await, 0, "a dry run writes nothing");
    db.cleanup().await;
}

#[tokio::test]
async fn budget_planned_amount_is_a_limit_too() {
    let (db, reg) = setup().await;
    let rows: Vec<String> = (1..=12)
        .map(|n| {
            row(
                n,
                &format!(
                    "Chef {}",
                    [
                        "Ba", "Cissé", "Dicko", "Fofana", "Guindo", "Haïdara", "Kanté", "Maïga",
                        "Niang", "Sow", "Tall", "Yattara"
                    ][n as usize - 1]
                ),
                6,
                "ML050101",
                "",
                &format!("NINA{n:011}X"),
            )
        })
        .collect();
    reg.import_households(
        P,
        &file(&rows),
        &ColumnMapping::kobo_default(),
        false,
        &ctx("officer"),
    )
    .await
    .unwrap();
    let q = HouseholdQuery {
        limit: 100,
        ..Default::default()
    };
    for h in reg.households(P, &q, Reveal::Full).await.unwrap() {
        reg.set_status(h.id, StatusAction::Verify, None, &ctx("checker"))
            .await
            .unwrap();
    }
    // Funded far beyond the plan: the plan (1,000,000) is the limit; 12 × 2 × 75,000 exceeds it.
    reg.fund_budget_line(P, "mpca", "5000000", "T1", date(), &ctx("finance"))
        .await
        .unwrap();
    let before = entry_count(&db.ledger).await;
    let err = reg
        .generate_entitlements(P, "2024-03", Modality::Mpca, date(), &ctx("checker"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::BudgetExceeded {
                funded_limit: false,
                needed: 1_800_000,
                remaining: 1_000_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("funds:{P}:mpca")));
    assert_eq!(
        entry_count(&db.ledger).await,
        before,
        "a refused cycle leaves no trace"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn personal_data_is_never_stored_in_plaintext() {
    let (db, reg) = setup().await;
    reg.import_households(
        P,
        &file(&six()),
        &ColumnMapping::kobo_default(),
        false,
        &ctx("officer"),
    )
    .await
    .unwrap();
    let needles = [
        "Traoré",
        "Traore",
        "Diarra",
        "Coulibaly",
        "76123456",
        "NINA0000000001A",
        "NINA0000000006F",
    ];
    let dump: Vec<u8> = if db.is_postgres() {
        let out = std::process::Command::new("pg_dump")
            .args(["--data-only", "--no-owner", &db.url])
            .output()
            .expect("pg_dump runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    } else {
        db.ledger.close().await;
        let path = db.url.trim_start_matches("sqlite://").to_owned();
        let mut all = std::fs::read(&path).unwrap();
        if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
            all.extend(wal);
        }
        all
    };
    assert!(dump.len() > 1000);
    for n in needles {
        assert!(
            !dump.windows(n.len()).any(|w| w == n.as_bytes()),
            "found a plaintext value in the database"
        );
    }
    // The enumerator's code and p-codes are not personal data and are stored as they are.
    assert!(dump.windows(8).any(|w| w == b"ML050101"));
    if db.is_postgres() {
        db.cleanup().await;
    }
}

/// Two cycles generated at once, each within the plan alone but not together: exactly one is
/// granted, whatever the interleaving (the check before the transaction reads without locks;
/// the one inside it is serialised by the fund account's lock).
#[tokio::test]
async fn concurrent_cycles_never_exceed_the_planned_amount() {
    let (db, reg) = setup().await;
    let rows: Vec<String> = (1..=4)
        .map(|n| {
            let name = ["Ba", "Cissé", "Dicko", "Fofana"][n as usize - 1];
            row(
                n,
                &format!("Chef {name}"),
                6,
                "ML050101",
                "",
                &format!("NINA{n:011}X"),
            )
        })
        .collect();
    let officer = ctx("officer");
    reg.import_households(
        P,
        &file(&rows),
        &ColumnMapping::kobo_default(),
        false,
        &officer,
    )
    .await
    .unwrap();
    let q = HouseholdQuery {
        limit: 100,
        ..Default::default()
    };
    for h in reg.households(P, &q, Reveal::Full).await.unwrap() {
        reg.set_status(h.id, StatusAction::Verify, None, &ctx("checker"))
            .await
            .unwrap();
    }
    reg.fund_budget_line(P, "mpca", "5000000", "T1", date(), &ctx("finance"))
        .await
        .unwrap();
    // 4 households × 2 tranches × 75,000 = 600,000 per cycle; the plan is 1,000,000.
    let (a, b) = tokio::join!(
        reg.generate_entitlements(P, "2024-03", Modality::Mpca, date(), &officer),
        reg.generate_entitlements(P, "2024-04", Modality::Mpca, date(), &officer),
    );
    let granted: Vec<_> = [&a, &b].into_iter().filter(|r| r.is_ok()).collect();
    assert_eq!(granted.len(), 1, "{a:?} / {b:?}");
    let refused = if a.is_err() { a } else { b }.unwrap_err();
    assert!(
        refused.to_string().contains("would be exceeded"),
        "{refused}"
    );
    let fund = db
        .ledger
        .account(&cva_ledger::account::AccountCode::parse(&format!("funds:{P}:mpca")).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fund.debits, 600_000);
    assert_books_sound(&db.ledger).await;
    db.cleanup().await;
}

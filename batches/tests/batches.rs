//! Batches on a real database (SQLite, or PostgreSQL with `CVA_TEST_DATABASE_URL`): built from
//! due entitlements per provider and size, the sign-off lifecycle with four eyes, cancellation,
//! and the database's own refusals (two live payments for one entitlement, a preparer's or a
//! repeated sign-off).

#![allow(clippy::unwrap_used)]

mod common;

use common::{ctx, P};
use cva_batches::{Batches, Filters, PaymentsConfig, Step};
use cva_ledger::audit::AuditQuery;
use cva_ledger::testing::{assert_books_sound, bal, entry_count, transfer, TestDb};
use cva_registry::{Registry, RegistryError};

const CONFIG: &str = r#"{
  "providers": [
    {"name": "orange-money", "adapter": "gsma-mmapi", "base_url": "http://127.0.0.1:9/mm",
     "credentials": {"env": "CVA_TEST_ORANGE_TOKEN"}, "currency": "XOF", "operators": ["orange-ml"],
     "min_amount": "500", "max_amount": "1000000", "fees": {"percent": "1", "minimum": "100"}},
    {"name": "moov-money", "adapter": "file", "currency": "XOF", "operators": ["moov-ml"],
     "min_amount": "500", "max_amount": "1000000", "fees": {"flat": "150"}}
  ],
  "approvals": [
    {"above": "0", "approvals": 1, "authorisations": 1, "releases": 1},
    {"above": "30000", "approvals": 2, "authorisations": 1, "releases": 1}
  ]
}"#;

/// Six verified households with entitlements of 20,000 XOF: 1, 2 and 6 on Orange (76…), 3 and
/// 4 on Moov (66…), 5 without a phone.
async fn setup() -> (TestDb, Registry, Batches) {
    let phones: Vec<String> = [
        "+223 76 10 00 01",
        "+223 76 10 00 02",
        "+223 66 10 00 03",
        "+223 66 10 00 04",
        "",
        "+223 76 10 00 06",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    let (db, reg) = common::households(&phones).await;
    let batches = Batches::new(reg.clone(), PaymentsConfig::from_json(CONFIG).unwrap());
    batches.open_provider_accounts(&ctx("admin")).await.unwrap();
    (db, reg, batches)
}

fn filters(max: usize) -> Filters {
    Filters {
        programme: P.into(),
        cycle: Some("2024-03".into()),
        max_lines: Some(max),
        ..Filters::default()
    }
}

#[tokio::test]
async fn batches_split_by_provider_and_size_and_need_four_eyes() {
    let (db, _reg, batches) = setup().await;
    let prep = ctx("preparer");
    let made = batches.create(&filters(2), &prep).await.unwrap();
    let shape: Vec<(&str, i64, i64, i64)> = made
        .batches
        .iter()
        .map(|b| (b.provider.as_str(), b.line_count, b.total, b.fees))
        .collect();
    // Orange: 1% with a 100 minimum = 200 per 20,000; Moov: flat 150.
    assert_eq!(
        shape,
        [
            ("moov-money", 2, 40_000, 300),
            ("orange-money", 2, 40_000, 400),
            ("orange-money", 1, 20_000, 200),
        ]
    );
    assert_eq!((made.no_provider, made.outside_limits), (1, 0));
    assert!(made.batches.iter().all(|b| b.status == "draft"));

    // Nothing is due twice: every entitlement with a provider is in a live line.
    let again = batches.create(&filters(2), &prep).await.unwrap();
    assert!(again.batches.is_empty());

    let (moov, big, small) = (made.batches[0].id, made.batches[1].id, made.batches[2].id);
    // Only the preparer submits; the band fixes the sign-offs (above 30,000: two approvals).
    let e = batches.submit(big, &ctx("someone")).await.unwrap_err();
    assert!(matches!(e, RegistryError::NotAllowed(_)), "{e}");
    let b = batches.submit(big, &prep).await.unwrap();
    assert_eq!(
        (
            b.status.as_str(),
            b.approvals_required,
            b.authorisations_required
        ),
        ("submitted", Some(2), Some(1))
    );
    let s = batches.submit(small, &prep).await.unwrap();
    assert_eq!(s.approvals_required, Some(1));

    // The preparer cannot sign; nobody signs twice; steps go in order.
    let e = batches.sign(big, Step::Approve, &prep).await.unwrap_err();
    assert!(matches!(e, RegistryError::SamePerson(_)), "{e}");
    let e = batches
        .sign(big, Step::Authorise, &ctx("ana"))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
    let b = batches.sign(big, Step::Approve, &ctx("ana")).await.unwrap();
    assert_eq!(b.status, "submitted", "one approval of two");
    let e = batches
        .sign(big, Step::Approve, &ctx("ana"))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::SamePerson(_)), "{e}");
    let b = batches.sign(big, Step::Approve, &ctx("bo")).await.unwrap();
    assert_eq!(b.status, "approved");
    let e = batches
        .sign(big, Step::Authorise, &ctx("bo"))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::SamePerson(_)), "{e}");
    let b = batches
        .sign(big, Step::Authorise, &ctx("cy"))
        .await
        .unwrap();
    assert_eq!(b.status, "authorised");
    assert_eq!(
        b.signoffs
            .iter()
            .map(|s| (s.step.as_str(), s.by.as_str()))
            .collect::<Vec<_>>(),
        [("approve", "ana"), ("approve", "bo"), ("authorise", "cy")]
    );

    // The database refuses the same things whatever SQL runs: a sign-off by the preparer or by
    // someone who signed already, and a second live line for an entitlement.
    let now = if db.is_postgres() {
        "now()"
    } else {
        "'2024-03-01T00:00:00Z'"
    };
    for (sql, why) in [
        (format!("INSERT INTO batch_signoffs (batch_id, step, actor, at) VALUES ({small}, 'approve', 'preparer', {now})"), "prepared"),
        (format!("INSERT INTO batch_signoffs (batch_id, step, actor, at) VALUES ({big}, 'release', 'ana', {now})"), "nique"),
        (format!("INSERT INTO batch_lines (batch_id, entitlement_id, household_id, amount, fee) SELECT {small}, entitlement_id, household_id, amount, fee FROM batch_lines WHERE batch_id = {big}"), "nique"),
    ] {
        let err = db.raw(&[&sql]).await.expect_err(&sql);
        assert!(err.to_lowercase().contains(&why.to_lowercase()), "{sql}: {err}");
    }

    // Release: refused while the float cannot cover total + fees, and nothing changes.
    let entries_before = entry_count(&db.ledger).await;
    let e = batches.sign(big, Step::Release, &prep).await.unwrap_err();
    assert!(matches!(e, RegistryError::SamePerson(_)), "{e}");
    let e = batches
        .sign(big, Step::Release, &ctx("dee"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot cover"), "{e}");
    assert_eq!(entry_count(&db.ledger).await, entries_before);
    let b = batches.batch(big).await.unwrap();
    assert_eq!((b.status.as_str(), b.signoffs.len()), ("authorised", 3));
    // 40,399 is one franc short of 40,000 + 400 in fees; 40,400 is enough.
    db.ledger
        .post(transfer(
            "float-1",
            "assets:float:orange-money",
            "assets:bank",
            40_399,
        ))
        .await
        .unwrap();
    assert!(batches.sign(big, Step::Release, &ctx("dee")).await.is_err());
    db.ledger
        .post(transfer(
            "float-2",
            "assets:float:orange-money",
            "assets:bank",
            1,
        ))
        .await
        .unwrap();
    let b = batches.sign(big, Step::Release, &ctx("dee")).await.unwrap();
    assert_eq!(b.status, "released");
    assert_eq!(entry_count(&db.ledger).await, entries_before + 2 + 2);
    assert_eq!(
        bal(&db.ledger, "liabilities:in-transit:orange-money").await,
        40_000
    );
    // Households 1 and 2 (the first Orange batch) are owed nothing more; 6 still is.
    let owed = |hh: i64| format!("liabilities:entitlements:{P}:hh-{hh}");
    assert_eq!(bal(&db.ledger, &owed(1)).await, 0);
    assert_eq!(bal(&db.ledger, &owed(2)).await, 0);
    assert_eq!(bal(&db.ledger, &owed(6)).await, 20_000);
    // A released batch cannot be cancelled.
    assert!(batches.cancel(big, "too late", &prep).await.is_err());
    assert_books_sound(&db.ledger).await;

    // Cancelling frees the entitlements: the next creation takes them again.
    let e = batches.cancel(moov, " ", &prep).await.unwrap_err();
    assert!(matches!(e, RegistryError::Invalid { .. }), "{e}");
    let c = batches.cancel(moov, "wrong cycle", &prep).await.unwrap();
    assert_eq!(c.status, "cancelled");
    assert!(batches.cancel(moov, "again", &prep).await.is_err());
    let redo = batches.create(&filters(10), &prep).await.unwrap();
    assert_eq!(
        redo.batches
            .iter()
            .map(|b| (b.provider.as_str(), b.total))
            .collect::<Vec<_>>(),
        [("moov-money", 40_000)]
    );

    // Every step is audited.
    let actions: Vec<String> = db
        .ledger
        .audit_events(&AuditQuery {
            object_type: Some("batch".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    for a in [
        "batch.create",
        "batch.submit",
        "batch.approve",
        "batch.authorise",
        "batch.cancel",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
    db.cleanup().await;
}

#[tokio::test]
async fn a_programme_with_its_own_bands_needs_more_sign_offs() {
    let (db, reg, _) = setup().await;
    let strict = CONFIG.replacen(
        r#""approvals": ["#,
        &format!(
            r#""programme_approvals": {{"{P}": [{{"above": "0", "approvals": 1, "authorisations": 2, "releases": 2}}]}},
               "approvals": ["#
        ),
        1,
    );
    let batches = Batches::new(reg.clone(), PaymentsConfig::from_json(&strict).unwrap());
    let prep = ctx("preparer");
    let made = batches.create(&filters(1), &prep).await.unwrap();
    let id = made.batches[0].id;
    let b = batches.submit(id, &prep).await.unwrap();
    assert_eq!(
        (
            b.approvals_required,
            b.authorisations_required,
            b.releases_required
        ),
        (Some(1), Some(2), Some(2))
    );
    batches.sign(id, Step::Approve, &ctx("ana")).await.unwrap();
    let b = batches.sign(id, Step::Authorise, &ctx("bo")).await.unwrap();
    assert_eq!(b.status, "approved", "one authorisation of two");
    let b = batches.sign(id, Step::Authorise, &ctx("cy")).await.unwrap();
    assert_eq!(b.status, "authorised");
    db.cleanup().await;
}

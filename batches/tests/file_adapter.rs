//! The file adapter on a real database (SQLite, or PostgreSQL with `CVA_TEST_DATABASE_URL`):
//! the exported payment file and its documented columns, re-export, result files with
//! completed, failed and pending rows (the same ledger effects as the API path), idempotent
//! re-import, whole-file refusal of bad rows with nothing changed, BOM and `;` files, and a
//! batch completed by a second result file, then re-issued.

#![allow(clippy::unwrap_used)]

mod common;

use common::{ctx, households, phone, released, AMOUNT, P};
use cva_batches::file::EXPORT_COLUMNS;
use cva_batches::{Applied, BatchView, Batches, LineView, PaymentsConfig, SendOptions};
use cva_ledger::testing::{assert_books_sound, bal, TestDb};
use cva_registry::{Registry, RegistryError};
use sha2::{Digest, Sha256};

const FEE: i64 = 100;
const FLOAT: i64 = 1_000_000;

/// One file-adapter provider for Orange Mali, named `orange-money` (the name
/// `common::batches` funds), a flat fee of 100 XOF.
fn file_config() -> PaymentsConfig {
    PaymentsConfig::from_json(&format!(
        r#"{{"providers": [{{"name": "orange-money", "adapter": "file", "currency": "XOF",
            "operators": ["orange-ml"], "min_amount": "500", "max_amount": "1000000",
            "fees": {{"flat": "{FEE}"}}}}],
           "approvals": [{{"above": "0", "approvals": 1, "authorisations": 1, "releases": 1}}]}}"#
    ))
    .unwrap()
}

/// `n` households on Orange Mali, a funded float, one released batch of them all.
async fn released_batch(n: usize) -> (TestDb, Registry, Batches, BatchView, Vec<String>) {
    let phones: Vec<String> = (0..n).map(|i| phone(i, None)).collect();
    let (db, reg) = households(&phones).await;
    let b = common::batches(&reg, file_config(), FLOAT).await;
    let batch = released(&b, 100).await;
    let e164 = phones.iter().map(|p| p.replace(' ', "")).collect();
    (db, reg, b, batch, e164)
}

const RESULT_HEADER: &str = "reference,status,provider_transaction_id,reason";

fn result_file(rows: &[String]) -> String {
    format!("{RESULT_HEADER}\n{}\n", rows.join("\n"))
}

/// Everything an import could change: the provider's accounts, every household's
/// entitlement account, the lines, the batch status and the attempts.
#[derive(Debug, PartialEq)]
struct Snapshot {
    balances: Vec<(String, i128)>,
    lines: Vec<LineView>,
    status: String,
    attempts: Vec<String>,
}

async fn snapshot(reg: &Registry, b: &Batches, id: i64) -> Snapshot {
    let lines = b.lines(id).await.unwrap();
    let mut codes = vec![
        "assets:float:orange-money".to_owned(),
        "liabilities:in-transit:orange-money".to_owned(),
        "expense:fees:orange-money".to_owned(),
    ];
    codes.extend(
        lines
            .iter()
            .map(|l| format!("liabilities:entitlements:{P}:hh-{}", l.household)),
    );
    let mut balances = Vec::new();
    for c in codes {
        let v = bal(reg.ledger(), &c).await;
        balances.push((c, v));
    }
    Snapshot {
        balances,
        lines,
        status: b.batch(id).await.unwrap().status,
        attempts: b
            .attempts(id)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.status)
            .collect(),
    }
}

/// The ledger agrees with the lines: float down by amount + fee per completed line, fees
/// charged for them, in transit what is still open, failed households owed their
/// entitlement again, the others nothing.
async fn check_books(reg: &Registry, b: &Batches, id: i64) {
    let ledger = reg.ledger();
    assert_books_sound(ledger).await;
    let lines = b.lines(id).await.unwrap();
    let completed = lines.iter().filter(|l| l.status == "completed").count() as i128;
    let open: i64 = lines
        .iter()
        .filter(|l| matches!(l.status.as_str(), "in_flight" | "unknown"))
        .map(|l| l.amount)
        .sum();
    assert_eq!(
        bal(ledger, "assets:float:orange-money").await,
        i128::from(FLOAT) - completed * i128::from(AMOUNT + FEE)
    );
    assert_eq!(
        bal(ledger, "expense:fees:orange-money").await,
        completed * i128::from(FEE)
    );
    assert_eq!(
        bal(ledger, "liabilities:in-transit:orange-money").await,
        i128::from(open)
    );
    for l in &lines {
        let owed = bal(
            ledger,
            &format!("liabilities:entitlements:{P}:hh-{}", l.household),
        )
        .await;
        let expect = if l.status == "failed" { AMOUNT } else { 0 };
        assert_eq!(owed, i128::from(expect), "line {} ({})", l.id, l.status);
    }
}

fn bad_rows(e: RegistryError) -> Vec<(usize, String)> {
    match e {
        RegistryError::BadRows(rows) => rows.into_iter().map(|r| (r.row, r.column)).collect(),
        other => panic!("expected bad rows, got {other:?}"),
    }
}

#[tokio::test]
async fn the_export_has_the_documented_columns_one_row_per_line_and_is_repeatable() {
    let (db, reg, b, batch, phones) = released_batch(3).await;
    let export = b.export_file(batch.id, &ctx("cy")).await.unwrap();

    let lines = b.lines(batch.id).await.unwrap();
    let attempts = b.attempts(batch.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    let a = &attempts[0];
    assert_eq!((a.status.as_str(), a.line_count), ("accepted", 3));
    uuid::Uuid::parse_str(&a.correlation_id).unwrap();
    assert_eq!(
        export.file_name,
        format!("orange-money-batch-{}-{}.csv", batch.id, a.correlation_id)
    );
    assert_eq!((export.lines, export.total_minor), (3, 3 * AMOUNT));
    assert_eq!(
        export.sha256,
        hex::encode(Sha256::digest(export.content.as_bytes()))
    );

    let mut reader = csv::Reader::from_reader(export.content.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, EXPORT_COLUMNS);
    assert_eq!(
        export.content.lines().next().unwrap().trim_end(),
        "reference,msisdn,amount,currency,fee,batch_reference,description"
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), lines.len());
    let mut msisdns = Vec::new();
    for (row, line) in rows.iter().zip(&lines) {
        assert_eq!(&row[0], line.id.to_string());
        assert_eq!(&row[2], "20000");
        assert_eq!(&row[3], "XOF");
        assert_eq!(&row[4], "100");
        assert_eq!(&row[5], a.correlation_id);
        assert_eq!(&row[6], format!("Cash assistance {P} batch {}", batch.id));
        msisdns.push(row[1].to_owned());
        assert_eq!(line.status, "in_flight");
    }
    msisdns.sort();
    let mut expected = phones.clone();
    expected.sort();
    assert_eq!(msisdns, expected, "E.164 as stored");

    // The hand-over moves no money: the amounts stay in transit until the results.
    assert_eq!(b.batch(batch.id).await.unwrap().status, "sending");
    check_books(&reg, &b, batch.id).await;
    // The Debug form never shows the phone numbers.
    let debug = format!("{export:?}");
    assert!(phones.iter().all(|p| !debug.contains(&p[1..])), "{debug}");

    // Exporting again gives the same file under the same reference, and records nothing new.
    let again = b.export_file(batch.id, &ctx("cy")).await.unwrap();
    assert_eq!(again, export);
    assert_eq!(b.attempts(batch.id).await.unwrap(), attempts);
    // A file batch is never sent through the API.
    let e = b
        .send(batch.id, &SendOptions::default(), &ctx("cy"))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
    db.cleanup().await;
}

#[tokio::test]
async fn export_and_import_are_refused_for_an_api_provider_and_out_of_order() {
    // A GSMA provider's batch: named in the refusal.
    let phones: Vec<String> = (0..2).map(|n| phone(n, None)).collect();
    let (db, reg) = households(&phones).await;
    let b = common::batches(&reg, common::config("http://127.0.0.1:9", 0, None), FLOAT).await;
    let batch = released(&b, 100).await;
    let e = b.export_file(batch.id, &ctx("cy")).await.unwrap_err();
    assert!(
        matches!(&e, RegistryError::Conflict(m) if m.contains("orange-money")),
        "{e}"
    );
    let e = b
        .import_results(batch.id, RESULT_HEADER.as_bytes(), &ctx("cy"))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
    assert_eq!(b.batch(batch.id).await.unwrap().status, "released");
    assert!(b.attempts(batch.id).await.unwrap().is_empty());
    db.cleanup().await;

    // A file provider's batch: not exported before release, no results before export.
    let (db, _reg, b, batch, _) = released_batch(2).await;
    let line = b.lines(batch.id).await.unwrap()[0].id;
    let file = result_file(&[format!("{line},completed,TX-1,")]);
    let e = b
        .import_results(batch.id, file.as_bytes(), &ctx("cy"))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
    b.export_file(batch.id, &ctx("cy")).await.unwrap();
    let e = b.export_file(batch.id + 1, &ctx("cy")).await.unwrap_err();
    assert!(matches!(e, RegistryError::NotFound(_)), "{e}");
    db.cleanup().await;
}

#[tokio::test]
async fn result_files_settle_lines_like_the_api_refuse_bad_rows_and_complete_the_batch() {
    let (db, reg, b, batch, phones) = released_batch(6).await;
    let id = batch.id;
    b.export_file(id, &ctx("cy")).await.unwrap();
    let l: Vec<i64> = b.lines(id).await.unwrap().iter().map(|l| l.id).collect();

    // Two paid, two failed, two pending.
    let first = result_file(&[
        format!("{},completed,TX-0,", l[0]),
        format!("{},PAID,TX-1,", l[1]),
        format!("{},failed,,identifierError: account not registered", l[2]),
        format!("{},rejected,,formatError", l[3]),
        format!("{},pending,,", l[4]),
        format!("{},pending,,", l[5]),
    ]);
    let applied = b
        .import_results(id, first.as_bytes(), &ctx("cy"))
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied {
            completed: 2,
            failed: 2,
            unknown: 0,
            already_resolved: 0
        }
    );
    let lines = b.lines(id).await.unwrap();
    let status: Vec<&str> = lines.iter().map(|l| l.status.as_str()).collect();
    assert_eq!(
        status,
        [
            "completed",
            "completed",
            "failed",
            "failed",
            "in_flight",
            "in_flight"
        ]
    );
    assert_eq!(lines[0].provider_transaction_id.as_deref(), Some("TX-0"));
    assert_eq!(lines[1].provider_transaction_id.as_deref(), Some("TX-1"));
    assert_eq!(
        lines[2].failure_code.as_deref(),
        Some("account_not_registered")
    );
    assert_eq!(lines[3].failure_code.as_deref(), Some("invalid_msisdn"));
    assert!(lines[..4]
        .iter()
        .all(|l| l.resolved_by.as_deref() == Some("file")));
    assert_eq!(b.batch(id).await.unwrap().status, "sending");
    assert_eq!(b.attempts(id).await.unwrap()[0].status, "accepted");
    check_books(&reg, &b, id).await;
    assert_eq!(
        bal(reg.ledger(), "liabilities:in-transit:orange-money").await,
        2 * i128::from(AMOUNT)
    );

    // The same file again changes nothing.
    let before = snapshot(&reg, &b, id).await;
    let again = b
        .import_results(id, first.as_bytes(), &ctx("cy"))
        .await
        .unwrap();
    assert_eq!(
        again,
        Applied {
            already_resolved: 4,
            ..Applied::default()
        }
    );
    assert_eq!(snapshot(&reg, &b, id).await, before);

    // Each bad file is refused whole, naming row and column; its good rows are not applied.
    let good = format!("{},completed,TX-4,", l[4]);
    let cases: Vec<(String, Vec<(usize, &str)>)> = vec![
        // An unknown reference (a phone number pasted in), after an empty line.
        (
            format!("{RESULT_HEADER}\n{good}\n\n{},completed,TX-9,\n", phones[0]),
            vec![(4, "reference")],
        ),
        (
            result_file(&[good.clone(), "999999,completed,TX-9,".into()]),
            vec![(3, "reference")],
        ),
        (
            result_file(&[good.clone(), format!("{},done,TX-5,", l[5])]),
            vec![(3, "status")],
        ),
        (
            result_file(&[good.clone(), format!("{},pending,,", l[4])]),
            vec![(3, "reference")],
        ),
        // Contradicting earlier outcomes: paid before, failed now; failed before, paid now;
        // paid under another transaction.
        (
            result_file(&[
                good.clone(),
                format!("{},failed,,requestDeclined", l[0]),
                format!("{},completed,TX-3,", l[3]),
                format!("{},completed,TX-OTHER,", l[1]),
            ]),
            vec![(3, "status"), (4, "status"), (5, "provider_transaction_id")],
        ),
        (
            result_file(&[
                good.clone(),
                format!("{},completed,,", l[5]),
                format!("{},failed,,", l[0]),
            ]),
            vec![(3, "provider_transaction_id"), (4, "reason")],
        ),
        // One provider transaction for two lines: already recorded, or twice in the file.
        (
            result_file(&[good.clone(), format!("{},completed,TX-0,", l[5])]),
            vec![(3, "provider_transaction_id")],
        ),
        (
            result_file(&[good.clone(), format!("{},completed,TX-4,", l[5])]),
            vec![(3, "provider_transaction_id")],
        ),
        (
            format!("reference,provider_transaction_id\n{},TX-4\n", l[4]),
            vec![(1, "status")],
        ),
    ];
    for (file, expected) in cases {
        let e = b
            .import_results(id, file.as_bytes(), &ctx("cy"))
            .await
            .unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(
            phones.iter().all(|p| !text.contains(&p[1..])),
            "no phone number in errors: {text}"
        );
        let got = bad_rows(e);
        let expected: Vec<(usize, String)> =
            expected.into_iter().map(|(r, c)| (r, c.into())).collect();
        assert_eq!(got, expected, "{file}");
        assert_eq!(snapshot(&reg, &b, id).await, before, "{file}");
    }

    // BOM, `;`, CRLF, headers in another order and case: accepted. Line 4 is paid; line 0
    // again is the same outcome.
    let semicolons = format!(
        "\u{feff}Status;Reference;Reason;Provider_Transaction_ID\r\nsuccess;{};;TX-4\r\ncompleted;{};;TX-0\r\n",
        l[4], l[0]
    );
    let applied = b
        .import_results(id, semicolons.as_bytes(), &ctx("cy"))
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied {
            completed: 1,
            already_resolved: 1,
            ..Applied::default()
        }
    );
    assert_eq!(b.batch(id).await.unwrap().status, "sending");
    check_books(&reg, &b, id).await;

    // The last pending line fails: the batch is done, the file attempt settled.
    let last = result_file(&[format!("{},failed,,requestDeclined: account blocked", l[5])]);
    let applied = b
        .import_results(id, last.as_bytes(), &ctx("cy"))
        .await
        .unwrap();
    assert_eq!(
        applied,
        Applied {
            failed: 1,
            ..Applied::default()
        }
    );
    assert_eq!(b.batch(id).await.unwrap().status, "partially_completed");
    assert_eq!(b.attempts(id).await.unwrap()[0].status, "settled");
    assert_eq!(
        b.lines(id).await.unwrap()[5].failure_code.as_deref(),
        Some("payee_blocked")
    );
    assert_eq!(b.line_counts(id).await.unwrap(), (3, 3, 0, 0));
    check_books(&reg, &b, id).await;
    assert_eq!(
        bal(reg.ledger(), "assets:float:orange-money").await,
        i128::from(FLOAT - 3 * (AMOUNT + FEE))
    );
    assert_eq!(
        bal(reg.ledger(), "liabilities:in-transit:orange-money").await,
        0
    );
    // No more export once done; importing the first file again still changes nothing.
    let e = b.export_file(id, &ctx("cy")).await.unwrap_err();
    assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
    let done = snapshot(&reg, &b, id).await;
    let e = b
        .import_results(id, first.as_bytes(), &ctx("cy"))
        .await
        .unwrap_err();
    // …except that its `pending` rows now contradict what is known.
    assert_eq!(
        bad_rows(e),
        [(6, "status".to_owned()), (7, "status".to_owned())]
    );
    b.import_results(id, last.as_bytes(), &ctx("cy"))
        .await
        .unwrap();
    assert_eq!(snapshot(&reg, &b, id).await, done);

    // The three failed entitlements go into a linked follow-up batch, once.
    let follow = b.reissue(id, &ctx("preparer")).await.unwrap();
    assert_eq!((follow.line_count, follow.total), (3, 3 * AMOUNT));
    assert_eq!(follow.follow_up_of, Some(id));
    let mut reissued: Vec<i64> = b
        .lines(follow.id)
        .await
        .unwrap()
        .iter()
        .map(|l| l.entitlement)
        .collect();
    reissued.sort();
    let lines = b.lines(id).await.unwrap();
    let mut failed: Vec<i64> = lines
        .iter()
        .filter(|l| l.status == "failed")
        .map(|l| l.entitlement)
        .collect();
    failed.sort();
    assert_eq!(reissued, failed);
    let e = b.reissue(id, &ctx("preparer")).await.unwrap_err();
    assert!(matches!(e, RegistryError::Conflict(_)), "{e}");
    assert_books_sound(reg.ledger()).await;
    db.cleanup().await;
}

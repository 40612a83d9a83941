//! `cva reports …` end to end against a database file: a report written to a file and to
//! standard output with its SHA-256 on standard error, verified by `cva reports verify`, a
//! one-byte change caught (non-zero exit), a user limited to another programme refused the
//! whole-book reports, a wrong password refused. SQLite, or PostgreSQL with
//! `CVA_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used)]

use std::process::Output;

use assert_cmd::Command;
use chrono::NaiveDate;
use cva_access::password::Password;
use cva_access::{AccessStore, NewUser, Role, Username};
use cva_households::msisdn::OperatorTable;
use cva_households::pii::PiiKeys;
use cva_ledger::audit::AuditContext;
use cva_ledger::testing::FreshDatabase;
use cva_programmes::rules::Modality;
use cva_registry::programmes::NewProgramme;
use cva_registry::Registry;

const P: &str = "MLI-MPCA-24";
const PASSWORD: &str = "correct horse battery staple";

fn ctx() -> AuditContext {
    AuditContext {
        actor_id: None,
        actor: "setup".into(),
        role: "operator".into(),
        request_id: "test".into(),
    }
}

struct Cli {
    db: FreshDatabase,
    dir: tempfile::TempDir,
}

impl Cli {
    fn run(&self, user: &str, password: &str, args: &[&str]) -> Output {
        Command::cargo_bin("cva")
            .unwrap()
            .env("DATABASE_URL", &self.db.url)
            .env("CVA_PII_KEY_FILE", self.dir.path().join("pii.keys"))
            .env("CVA_PASSWORD", password)
            .env_remove("CVA_USER")
            .current_dir(self.dir.path())
            .timeout(std::time::Duration::from_secs(120))
            .args(args)
            .args(["--user", user])
            .output()
            .unwrap()
    }

    fn ok(&self, user: &str, args: &[&str]) -> Output {
        let out = self.run(user, PASSWORD, args);
        assert!(
            out.status.success(),
            "cva {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// The hash `cva reports` printed on standard error.
fn printed_sha(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.strip_prefix("sha256 "))
        .unwrap_or_else(|| panic!("no sha256 line in {err}"))
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_written_hashed_and_verified_on_the_command_line() {
    let cli = Cli {
        db: FreshDatabase::create().await,
        dir: tempfile::tempdir().unwrap(),
    };
    {
        let ledger = cva_ledger::Ledger::connect(&cli.db.url).await.unwrap();
        ledger.migrate().await.unwrap();
        let reg = Registry::new(
            ledger.clone(),
            PiiKeys::generate().0,
            OperatorTable::default_table(),
            "223",
        );
        let day = |m, d| NaiveDate::from_ymd_opt(2024, m, d).unwrap();
        reg.create_programme(
            NewProgramme {
                code: P.into(),
                name: "MPCA Mopti".into(),
                donor: "ECHO".into(),
                grant_ref: "ECHO/2024/1".into(),
                currency: "XOF".into(),
                reporting_currency: "EUR".into(),
                starts_on: day(1, 1),
                ends_on: day(12, 31),
                regions: vec!["ML05".into()],
            },
            &ctx(),
        )
        .await
        .unwrap();
        reg.add_budget_line(P, "mpca", Modality::Mpca, "1000000", &ctx())
            .await
            .unwrap();
        reg.fund_budget_line(P, "mpca", "600000", "ECHO-1", day(3, 1), &ctx())
            .await
            .unwrap();
        reg.add_rate(P, day(1, 1), "0.00152449", "BCEAO", &ctx())
            .await
            .unwrap();
        let store = AccessStore::new(ledger.clone());
        for (name, programmes) in [("awa", vec![]), ("ella", vec!["OTHER-PROG".to_owned()])] {
            store
                .create_user(
                    NewUser {
                        username: Username::parse(name).unwrap(),
                        password: Password::parse(PASSWORD).unwrap(),
                        roles: vec![Role::Auditor],
                        programmes,
                    },
                    &ctx(),
                )
                .await
                .unwrap();
        }
        ledger.close().await;
    }

    // To a file: the hash on standard error is the file's.
    let tb = cli.path("tb.csv");
    let out = cli.ok(
        "awa",
        &["reports", "trial-balance", "--format", "csv", "--out", &tb],
    );
    assert!(out.stdout.is_empty());
    let bytes = std::fs::read(&tb).unwrap();
    assert_eq!(printed_sha(&out), cva_reports::store::sha256_hex(&bytes));
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(
        text.starts_with("account,currency,debit,credit,balance\n"),
        "{text}"
    );
    assert!(
        text.contains("funds:MLI-MPCA-24:mpca,XOF,0,600000,-600000"),
        "{text}"
    );

    // To standard output.
    let out = cli.ok(
        "awa",
        &[
            "reports",
            "budget",
            "--programme",
            P,
            "--as-of",
            "2024-03-31",
            "--format",
            "json",
        ],
    );
    assert_eq!(
        printed_sha(&out),
        cva_reports::store::sha256_hex(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["report"], "budget");
    assert_eq!(v["header"]["rate"]["rate"], "0.00152449");
    // 600,000 XOF × 0.00152449 = 914.694 → 914.69 EUR.
    let total = v["rows"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(total["funded"], "600000");
    assert_eq!(total["funded_reporting"], "914.69");

    // Verified; a byte changed is not.
    let out = cli.ok("awa", &["reports", "verify", &tb]);
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.contains("produced here: trial-balance report (csv)"),
        "{said}"
    );
    assert!(said.contains("by awa (auditor)"), "{said}");
    let mut changed = bytes.clone();
    changed[10] ^= 0x20;
    let bad = cli.path("tb-changed.csv");
    std::fs::write(&bad, &changed).unwrap();
    let out = cli.run("awa", PASSWORD, &["reports", "verify", &bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no report with this hash was produced here"),
        "{err}"
    );
    let out = cli.ok("awa", &["reports", "verify", &tb, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "verified");

    // Limited to another programme: no whole-book report, not this programme's budget.
    let out = cli.run(
        "ella",
        PASSWORD,
        &["reports", "trial-balance", "--format", "csv"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limited"));
    let out = cli.run(
        "ella",
        PASSWORD,
        &["reports", "budget", "--programme", P, "--format", "csv"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    // A wrong password.
    let out = cli.run(
        "awa",
        "wrong password here",
        &["reports", "journal", "--format", "csv"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot act as"));
    cli.db.drop_database().await;
}

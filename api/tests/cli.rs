//! The `cva` command line, end to end: every ledger command, bad input with its message and
//! exit code, the hledger cross-check of the export, and the demo. Runs against SQLite, or
//! PostgreSQL with `CVA_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use cva_ledger::testing::FreshDatabase;

struct Cli {
    db: FreshDatabase,
    dir: tempfile::TempDir,
}

impl Cli {
    async fn new() -> Cli {
        Cli {
            db: FreshDatabase::create().await,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::cargo_bin("cva")
            .expect("cva binary")
            .env("DATABASE_URL", &self.db.url)
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .expect("run cva")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cva {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "cva {args:?} should have failed");
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8(out.stderr).expect("utf-8")
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write");
        p.display().to_string()
    }

    fn post(&self, name: &str, json: &str) -> Output {
        let f = self.file(name, json);
        self.run(&["ledger", "post", "--file", &f])
    }

    fn trial_balance_csv(&self) -> String {
        self.ok(&["ledger", "trial-balance", "--format", "csv"])
    }
}

fn entry(key: &str, lines: &str) -> String {
    format!(
        r#"{{"idempotency_key": "{key}", "description": "Donor funds received", "effective_date": "2024-03-01",
            "metadata": {{"grant": "ECHO/2024/01", "note": "first tranche; cash, vouchers"}}, "lines": [{lines}]}}"#
    )
}

fn line(account: &str, side: &str, amount: &str, currency: &str) -> String {
    format!(
        r#"{{"account": "{account}", "side": "{side}", "amount": {amount}, "currency": "{currency}"}}"#
    )
}

fn funds(key: &str, amount: &str) -> String {
    entry(
        key,
        &format!(
            "{},{}",
            line("assets:bank", "debit", &format!("\"{amount}\""), "XOF"),
            line(
                "funds:MLI-MPCA-2024:mpca",
                "credit",
                &format!("\"{amount}\""),
                "XOF"
            )
        ),
    )
}

#[tokio::test]
async fn post_balance_trial_balance_and_reverse() {
    let cli = Cli::new().await;
    cli.ok(&["migrate"]);
    let out = cli.post("e1.json", &funds("funds-1", "1000000"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "prints the entry id: {id}"
    );

    // Same key, same content: the same id, nothing new.
    let again = cli.post("e1-again.json", &funds("funds-1", "1000000"));
    assert!(again.status.success());
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), id);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already posted"));

    let bal = cli.ok(&["ledger", "balance", "assets:bank"]);
    assert!(bal.contains("balance   1000000 XOF"), "{bal}");
    let json: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "ledger",
        "balance",
        "funds:MLI-MPCA-2024:mpca",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(json["balance"], "1000000");
    assert_eq!(json["account_type"], "fund");

    let csv = cli.trial_balance_csv();
    assert_eq!(
        csv,
        "account,currency,debit,credit,balance\n\
         assets:bank,XOF,1000000,0,1000000\n\
         funds:MLI-MPCA-2024:mpca,XOF,0,1000000,-1000000\n"
    );
    let table = cli.ok(&["ledger", "trial-balance"]);
    assert!(
        table.contains("balanced: every currency nets to zero"),
        "{table}"
    );
    let tb: serde_json::Value =
        serde_json::from_str(&cli.ok(&["ledger", "trial-balance", "--format", "json"])).unwrap();
    assert_eq!(tb["balanced"], true);
    assert_eq!(tb["totals"][0]["debit"], "1000000");

    // As of a date before anything was posted.
    let before = cli.ok(&["ledger", "balance", "assets:bank", "--as-of", "2000-01-01"]);
    assert!(before.contains("balance   0 XOF"), "{before}");
    let bad_time = cli.fails(&["ledger", "balance", "assets:bank", "--as-of", "yesterday"]);
    assert!(bad_time.contains("--as-of"), "{bad_time}");

    let rev = cli.ok(&[
        "ledger",
        "reverse",
        &id,
        "--reason",
        "posted to the wrong grant",
    ]);
    assert!(uuid::Uuid::parse_str(rev.trim()).is_ok());
    let err = cli.fails(&["ledger", "reverse", &id, "--reason", "again"]);
    assert!(err.contains("already reversed"), "{err}");
    let bal = cli.ok(&["ledger", "balance", "assets:bank"]);
    assert!(bal.contains("balance   0 XOF"), "{bal}");
    let shown: serde_json::Value =
        serde_json::from_str(&cli.ok(&["ledger", "show", rev.trim()])).unwrap();
    assert_eq!(shown["reverses"], id.as_str());

    let verify = cli.ok(&["ledger", "verify"]);
    assert!(verify.starts_with("ok:"), "{verify}");
    cli.db.drop_database().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_message_and_changes_nothing() {
    let cli = Cli::new().await;
    let out = cli.post("ok.json", &funds("funds-1", "500"));
    assert!(out.status.success());
    let before = cli.trial_balance_csv();

    let xof = |amount: &str| {
        entry(
            "k2",
            &format!(
                "{},{}",
                line("assets:bank", "debit", amount, "XOF"),
                line("funds:P:l", "credit", amount, "XOF")
            ),
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed JSON", "{\"idempotency_key\": \"k\", ".to_owned(), "invalid JSON"),
        ("JSON number amount", xof("12.5"), "lines[0].amount: must be a string"),
        ("too many decimals for XOF", xof("\"12.5\""), "lines[0].amount: `12.5` has more decimals than XOF allows"),
        ("negative amount", xof("\"-100\""), "lines[0].amount: `-100` is negative"),
        ("zero amount", xof("\"0\""), "lines[0].amount: `0` is zero"),
        ("overflow", xof("\"99999999999999999999\""), "too large"),
        (
            "unknown currency",
            entry("k3", &format!("{},{}", line("assets:bank", "debit", "\"1\"", "XYZ"), line("funds:P:l", "credit", "\"1\"", "XYZ"))),
            "lines[0].currency: unknown currency `XYZ`",
        ),
        (
            "unbalanced",
            entry("k4", &format!("{},{}", line("assets:bank", "debit", "\"100\"", "XOF"), line("funds:P:l", "credit", "\"90\"", "XOF"))),
            "unbalanced in XOF: debits exceed the other side by 10 XOF",
        ),
        ("idempotency conflict", funds("funds-1", "501"), "idempotency key `funds-1` was already used"),
        (
            "bad account code",
            entry("k5", &format!("{},{}", line("cash", "debit", "\"1\"", "XOF"), line("funds:P:l", "credit", "\"1\"", "XOF"))),
            "lines[0].account",
        ),
        (
            "overdraft of a protected account",
            entry("k6", &format!("{},{}", line("expense:x", "debit", "\"600\"", "XOF"), line("assets:bank", "credit", "\"600\"", "XOF"))),
            "`assets:bank` may not go negative",
        ),
        (
            "unknown field",
            r#"{"idempotency_key": "k7", "description": "d", "effective_date": "2024-03-01", "lines": [], "amount": 1}"#.to_owned(),
            "unknown field `amount`",
        ),
        (
            "bad date",
            r#"{"idempotency_key": "k8", "description": "d", "effective_date": "01/03/2024", "lines": []}"#.to_owned(),
            "effective_date: must be a date",
        ),
    ];
    for (what, json, message) in cases {
        let err = cli.fails(&["ledger", "post", "--file", &cli.file("bad.json", &json)]);
        assert!(
            err.contains(message),
            "{what}: expected {message:?} in {err:?}"
        );
        assert!(err.starts_with("error: "), "{what}: {err}");
        assert_eq!(cli.trial_balance_csv(), before, "{what} changed the books");
    }
    let err = cli.fails(&["ledger", "post", "--file", "/nonexistent/entry.json"]);
    assert!(err.contains("cannot read"), "{err}");
    let err = cli.fails(&["ledger", "reverse", "not-a-uuid", "--reason", "x"]);
    assert!(err.contains("entry_id: is not a UUID"), "{err}");
    let err = cli.fails(&["ledger", "balance", "assets:missing"]);
    assert!(err.contains("does not exist"), "{err}");
    let err = cli.fails(&[
        "ledger",
        "reverse",
        "01a21f38-cb09-74ff-8fc1-d35fe24d2ecf",
        "--reason",
        "x",
    ]);
    assert!(err.contains("does not exist"), "{err}");
    // post-many is all or nothing, and says which entry failed.
    let batch = format!("[{}, {}]", funds("many-1", "5"), xof("\"-1\""));
    let err = cli.fails(&[
        "ledger",
        "post-many",
        "--file",
        &cli.file("many.json", &batch),
    ]);
    assert!(err.contains("entry #1"), "{err}");
    assert_eq!(cli.trial_balance_csv(), before);
    cli.db.drop_database().await;
}

#[tokio::test]
async fn unsupported_database_urls_are_named_without_credentials() {
    let cli = Cli::new().await;
    let out = Command::cargo_bin("cva")
        .unwrap()
        .args(["--database-url", "mysql://admin:s3cret@db/cva", "migrate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported database URL"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    cli.db.drop_database().await;
}

/// hledger's balances (`--empty`, flat, CSV) as account → "amount COMMODITY".
fn hledger_balances(journal: &Path) -> Option<BTreeMap<String, String>> {
    let out = match std::process::Command::new("hledger")
        .args([
            "-f",
            &journal.display().to_string(),
            "balance",
            "--flat",
            "--empty",
            "--no-total",
            "-O",
            "csv",
        ])
        .output()
    {
        Ok(out) => out,
        Err(_) if std::env::var("CVA_REQUIRE_HLEDGER").is_err() => {
            eprintln!("hledger is not installed: skipping the hledger cross-check (CI sets CVA_REQUIRE_HLEDGER=1)");
            return None;
        }
        Err(e) => panic!("hledger is required (CVA_REQUIRE_HLEDGER) but cannot run: {e}"),
    };
    assert!(
        out.status.success(),
        "hledger failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = csv::Reader::from_reader(out.stdout.as_slice());
    Some(
        r.records()
            .map(|rec| {
                let rec = rec.expect("hledger csv");
                (rec[0].to_owned(), rec[1].to_owned())
            })
            .collect(),
    )
}

/// Checks that hledger reads `journal` and reproduces the trial balance CSV exactly.
fn assert_hledger_matches(journal: &Path, trial_balance_csv: &str) {
    let Some(hledger) = hledger_balances(journal) else {
        return;
    };
    let mut r = csv::Reader::from_reader(trial_balance_csv.as_bytes());
    let ours: BTreeMap<String, String> = r
        .records()
        .map(|rec| {
            let rec = rec.expect("trial balance csv");
            // hledger writes a zero balance without its commodity.
            let shown = if rec[4].trim_start_matches(['0', '.', '-']).is_empty() {
                "0".to_owned()
            } else {
                format!("{} {}", &rec[4], &rec[1])
            };
            (rec[0].to_owned(), shown)
        })
        .collect();
    assert!(!ours.is_empty());
    let differences: Vec<String> = ours
        .keys()
        .chain(hledger.keys())
        .filter(|k| ours.get(*k) != hledger.get(*k))
        .map(|k| format!("{k}: cva {:?} hledger {:?}", ours.get(k), hledger.get(k)))
        .collect();
    assert!(differences.is_empty(), "hledger disagrees: {differences:?}");
}

#[tokio::test]
async fn export_is_read_by_hledger_with_the_same_balances() {
    let cli = Cli::new().await;
    let posts = [
        funds("f1", "250000000"),
        entry(
            "usd",
            &format!(
                "{},{}",
                line("assets:bank:usd", "debit", "\"1234.56\"", "USD"),
                line("funds:P:usd", "credit", "\"1234.56\"", "USD")
            ),
        ),
        entry(
            "fl",
            &format!(
                "{},{}",
                line("assets:float:orange", "debit", "\"1000000\"", "XOF"),
                line("assets:bank", "credit", "\"1000000\"", "XOF")
            ),
        ),
        entry(
            "g1",
            &format!(
                "{},{}",
                line("expense:transfers:P:mpca", "debit", "\"65000\"", "XOF"),
                line(
                    "liabilities:entitlements:HH-000001",
                    "credit",
                    "\"65000\"",
                    "XOF"
                )
            ),
        ),
        entry(
            "p1",
            &format!(
                "{},{}",
                line(
                    "liabilities:entitlements:HH-000001",
                    "debit",
                    "\"65000\"",
                    "XOF"
                ),
                line(
                    "liabilities:in-transit:orange",
                    "credit",
                    "\"65000\"",
                    "XOF"
                )
            ),
        ),
        entry(
            "c1",
            &format!(
                "{},{},{},{}",
                line("liabilities:in-transit:orange", "debit", "\"65000\"", "XOF"),
                line("assets:float:orange", "credit", "\"65000\"", "XOF"),
                line("expense:fees:orange", "debit", "\"150\"", "XOF"),
                line("assets:float:orange", "credit", "\"150\"", "XOF")
            ),
        ),
    ];
    for (i, p) in posts.iter().enumerate() {
        let out = cli.post(&format!("p{i}.json"), p);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cli.ok(&["ledger", "export", "--format", "ledger"]);
    assert_eq!(
        out.matches(" * (").count(),
        posts.len(),
        "one transaction per entry"
    );
    assert!(
        out.contains("1234.56 USD") && out.contains("-1234.56 USD"),
        "{out}"
    );
    assert!(out.contains("; meta-grant: ECHO/2024/01"), "{out}");
    let journal = cli.dir.path().join("journal.ledger");
    cli.ok(&[
        "ledger",
        "export",
        "--format",
        "ledger",
        "--output",
        &journal.display().to_string(),
    ]);
    assert_hledger_matches(&journal, &cli.trial_balance_csv());
    let jsonl = cli.ok(&["ledger", "export", "--format", "jsonl"]);
    assert_eq!(jsonl.lines().count(), posts.len());
    cli.db.drop_database().await;
}

#[tokio::test]
async fn demo_runs_the_cycle_and_leaves_reports() {
    let cli = Cli::new().await;
    // The demo makes its own fresh SQLite file unless a database is named; name the test one so
    // the demo also runs on PostgreSQL in CI.
    let out = Command::cargo_bin("cva")
        .unwrap()
        .current_dir(cli.dir.path())
        .args([
            "--database-url",
            &cli.db.url,
            "demo",
            "--dir",
            "out",
            "--households",
            "400",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("400 rows: 400 households enrolled"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verifying their own household: refused"),
        "{stdout}"
    );
    assert!(
        stdout.contains("entitlements (") && stdout.contains("by rule v1"),
        "{stdout}"
    );
    assert!(stdout.contains("again creates 0 entitlements"), "{stdout}");
    assert!(
        stdout.contains("a grant beyond the budget line: refused"),
        "{stdout}"
    );
    assert!(stdout.contains("twice: refused"), "{stdout}");
    assert!(stdout.contains("net 0"), "{stdout}");
    let dir = cli.dir.path().join("out");
    for f in [
        "trial-balance.csv",
        "trial-balance.json",
        "journal.ledger",
        "households-owed.csv",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let tb = std::fs::read_to_string(dir.join("trial-balance.csv")).unwrap();
    assert_hledger_matches(&dir.join("journal.ledger"), &tb);
    // 400 households, one in fifty unpaid (8), plus those whose payment failed, less the one
    // whose entitlement was cancelled.
    let owed = std::fs::read_to_string(dir.join("households-owed.csv")).unwrap();
    assert!(owed.lines().count() > 8, "{owed}");

    // With no database named, the demo uses a fresh SQLite file in its folder, twice in a row.
    for _ in 0..2 {
        let out = Command::cargo_bin("cva")
            .unwrap()
            .current_dir(cli.dir.path())
            .env_remove("DATABASE_URL")
            .args(["demo", "--dir", "fresh", "--households", "50"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(cli.dir.path().join("fresh/cva-demo.db").exists());
    cli.db.drop_database().await;
}

#[tokio::test]
async fn first_admin_from_the_command_line_and_serve_refuses_weak_secrets() {
    let cli = Cli::new().await;
    let add = |password: &str, username: &str| {
        Command::cargo_bin("cva")
            .unwrap()
            .env("DATABASE_URL", &cli.db.url)
            .args([
                "user",
                "add",
                "--username",
                username,
                "--role",
                "admin",
                "--password-stdin",
            ])
            .write_stdin(format!("{password}\n"))
            .output()
            .unwrap()
    };
    let out = add("too short", "admin");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12 characters"));
    let out = add("a long admin passphrase", "admin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("user admin created"));
    let out = add("a long admin passphrase", "admin");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already taken"));
    let list = cli.ok(&["user", "list"]);
    assert!(list.contains("admin\tadmin\tall programmes"), "{list}");
    assert!(!list.contains("argon2"), "the hash never leaves the store");
    let audit = cli.ok(&[
        "audit",
        "list",
        "--action",
        "user.create",
        "--format",
        "json",
    ]);
    assert!(audit.contains("user.create"), "{audit}");

    for (secret, message) in [
        (None, "no token secret"),
        (Some("short"), "at least 32 bytes"),
        (Some(&*"x".repeat(40)), "too few distinct"),
    ] {
        let mut cmd = Command::cargo_bin("cva").unwrap();
        cmd.env("DATABASE_URL", &cli.db.url)
            .env_remove("CVA_JWT_SECRET")
            .args(["serve", "--listen", "127.0.0.1:0"]);
        if let Some(s) = secret {
            cmd.env("CVA_JWT_SECRET", s);
        }
        let out = cmd
            .timeout(std::time::Duration::from_secs(20))
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{err}");
        if let Some(s) = secret {
            assert!(
                !err.contains(s) || s.len() < 6,
                "the secret is never printed: {err}"
            );
        }
    }
    cli.db.drop_database().await;
}

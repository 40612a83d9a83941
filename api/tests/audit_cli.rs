//! `cva audit …` end to end: the command line's own changes are audited as `cli:$USER`,
//! `cva audit list` reads them, and `cva audit verify` passes on an intact trail and exits 1
//! naming the first tampered event after direct SQL edits. Runs against SQLite, or PostgreSQL
//! with `CVA_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used)]

use std::process::Output;

use assert_cmd::Command;
use cva_ledger::testing::FreshDatabase;
use cva_ledger::Ledger;

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

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("cva").expect("cva binary");
        c.env("DATABASE_URL", &self.db.url)
            .env("USER", "tester")
            .current_dir(self.dir.path())
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run cva")
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

    /// Runs a command that must fail with exit status 1; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "cva {args:?} should have failed"
        );
        String::from_utf8(out.stderr).expect("utf-8")
    }

    fn file(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write");
        p.display().to_string()
    }

    fn events(&self) -> Vec<serde_json::Value> {
        let out = self.ok(&["audit", "list", "--format", "json"]);
        serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
    }

    /// Direct SQL on the database, as someone with table rights would; first drops the
    /// append-only triggers (if still there).
    async fn tamper(&self, statements: &[&str]) {
        let ledger = Ledger::connect(&self.db.url).await.unwrap();
        if let Some(pool) = ledger.pg_pool() {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events")
                .execute(&mut *tx)
                .await
                .unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
        } else if let Some(pool) = ledger.sqlite_pool() {
            let mut tx = pool.begin().await.unwrap();
            for s in [
                "DROP TRIGGER IF EXISTS audit_events_no_update",
                "DROP TRIGGER IF EXISTS audit_events_no_delete",
            ]
            .iter()
            .chain(statements)
            {
                sqlx::query(s).execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
        ledger.close().await;
    }

    async fn cleanup(self) {
        self.db.drop_database().await;
    }
}

fn entry(key: &str, amount: &str, debit: &str, credit: &str) -> String {
    format!(
        r#"{{"idempotency_key": "{key}", "description": "Test", "effective_date": "2024-03-01",
            "lines": [
              {{"account": "{debit}", "side": "debit", "amount": "{amount}", "currency": "XOF"}},
              {{"account": "{credit}", "side": "credit", "amount": "{amount}", "currency": "XOF"}}]}}"#
    )
}

const BANK: &str = "assets:bank";
const FUNDS: &str = "funds:MLI-MPCA-2024:mpca";

#[tokio::test]
async fn cli_changes_are_audited_and_verify_names_a_tampered_event() {
    let cli = Cli::new().await;
    let f = cli.file("e1.json", &entry("funds-1", "1000", BANK, FUNDS));
    let id = cli.ok(&["ledger", "post", "--file", &f]).trim().to_owned();
    // Replay: nothing written, no event.
    cli.ok(&["ledger", "post", "--file", &f]);
    cli.ok(&["ledger", "open", "assets:float:orange", "--currency", "XOF"]);
    let many = cli.file(
        "many.json",
        &format!(
            "[{}, {}]",
            entry("funds-2", "10", BANK, FUNDS),
            entry("funds-3", "20", BANK, FUNDS)
        ),
    );
    let ids: Vec<String> = cli
        .ok(&["ledger", "post-many", "--file", &many])
        .lines()
        .map(str::to_owned)
        .collect();
    let reversal = cli
        .ok(&["ledger", "reverse", &id, "--reason", "entered twice"])
        .trim()
        .to_owned();
    // Refused (the float is empty and may not go negative): no event.
    let bad = cli.file(
        "bad.json",
        &entry("pay", "5", "expense:payouts:orange", "assets:float:orange"),
    );
    cli.fails(&["ledger", "post", "--file", &bad]);
    // Reading commands write nothing.
    cli.ok(&["ledger", "trial-balance"]);

    let events = cli.events();
    let summary: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["object_type"].as_str().unwrap().to_owned(),
                e["object_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let s = |a: &str, t: &str, o: &str| (a.to_owned(), t.to_owned(), o.to_owned());
    assert_eq!(
        summary,
        vec![
            s("ledger.post", "entry", &id),
            s("ledger.open_account", "account", "assets:float:orange"),
            s("ledger.post", "entry", &ids[0]),
            s("ledger.post", "entry", &ids[1]),
            s("ledger.reverse", "entry", &reversal),
        ]
    );
    for e in &events {
        assert_eq!(e["actor"], "cli:tester");
        assert_eq!(e["role"], "operator");
        assert!(e["actor_id"].is_null());
        assert!(uuid::Uuid::parse_str(e["request_id"].as_str().unwrap()).is_ok());
    }
    // One request id per invocation: the batch shares one, the others differ.
    assert_eq!(events[2]["request_id"], events[3]["request_id"]);
    assert_ne!(events[0]["request_id"], events[1]["request_id"]);
    assert_ne!(events[1]["request_id"], events[2]["request_id"]);

    let csv = cli.ok(&[
        "audit",
        "list",
        "--actor",
        "cli:tester",
        "--action",
        "ledger.reverse",
        "--format",
        "csv",
    ]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("seq,at,actor_id,actor,role,action,object_type,object_id"));
    assert!(lines[1].starts_with("5,"), "{csv}");
    let table = cli.ok(&["audit", "list", "--limit", "2"]);
    assert!(table.contains("ledger.open_account"), "{table}");
    assert!(!table.contains("ledger.reverse"), "{table}");
    let err = cli.fails(&["audit", "list", "--limit", "0"]);
    assert!(err.contains("limit"), "{err}");

    let ok = cli.ok(&["audit", "verify"]);
    assert!(ok.starts_with("ok: 5 events, chain intact\n"), "{ok}");
    assert!(
        ok.contains(&format!("head: 5:{}", events[4]["hash"].as_str().unwrap())),
        "{ok}"
    );

    cli.tamper(&["UPDATE audit_events SET object_id = 'assets:float:other' WHERE seq = 2"])
        .await;
    let err = cli.fails(&["audit", "verify"]);
    assert!(
        err.contains("audit event 2 was edited: its hash does not match its content"),
        "{err}"
    );
    cli.cleanup().await;
}

#[tokio::test]
async fn verify_names_deleted_and_reordered_events_and_a_truncated_tail_against_its_head() {
    let cli = Cli::new().await;
    for i in 0..5 {
        let f = cli.file(
            &format!("e{i}.json"),
            &entry(&format!("k{i}"), "10", BANK, FUNDS),
        );
        cli.ok(&["ledger", "post", "--file", &f]);
    }
    let ok = cli.ok(&["audit", "verify"]);
    let head = ok
        .lines()
        .find_map(|l| l.strip_prefix("head: "))
        .unwrap()
        .to_owned();

    // The last event deleted: the chain alone is still intact…
    cli.tamper(&["DELETE FROM audit_events WHERE seq = 5"])
        .await;
    let ok = cli.ok(&["audit", "verify"]);
    assert!(ok.starts_with("ok: 4 events, chain intact"), "{ok}");
    // …but not against the head recorded before.
    let err = cli.fails(&["audit", "verify", "--expect-head", &head]);
    assert!(err.contains("audit event 5 is missing"), "{err}");
    // A malformed head is a usage error (clap's exit status 2).
    let out = cli.run(&["audit", "verify", "--expect-head", "5:xyz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SEQ:HASH"));

    // Events 2 and 4 swapped.
    cli.tamper(&[
        "UPDATE audit_events SET seq = 1000 WHERE seq = 2",
        "UPDATE audit_events SET seq = 2 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = 1000",
    ])
    .await;
    let err = cli.fails(&["audit", "verify"]);
    assert!(err.contains("audit event 2 was reordered"), "{err}");

    // A middle event deleted: while 2 and 4 are still swapped, event 2 is the first one wrong;
    // once they are swapped back, the gap shows.
    cli.tamper(&["DELETE FROM audit_events WHERE seq = 3"])
        .await;
    let err = cli.fails(&["audit", "verify"]);
    assert!(err.contains("audit event 2 was reordered"), "{err}");
    cli.tamper(&[
        "UPDATE audit_events SET seq = 1000 WHERE seq = 2",
        "UPDATE audit_events SET seq = 2 WHERE seq = 4",
        "UPDATE audit_events SET seq = 4 WHERE seq = 1000",
    ])
    .await;
    let err = cli.fails(&["audit", "verify"]);
    assert!(
        err.contains("audit event 3 is missing (deleted): the trail goes from event 2 to event 4"),
        "{err}"
    );
    cli.cleanup().await;
}

#[tokio::test]
async fn without_user_the_actor_is_cli() {
    let cli = Cli::new().await;
    let f = cli.file("e.json", &entry("k", "10", BANK, FUNDS));
    let out = cli
        .command(&["ledger", "post", "--file", &f])
        .env_remove("USER")
        .output()
        .unwrap();
    assert!(out.status.success());
    let events = cli.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["actor"], "cli");
    cli.cleanup().await;
}

//! Payment batches from the command line, end to end: `cva batches …` and `cva providers …` run
//! as separate authenticated users (password from `CVA_PASSWORD` or standard input) against a
//! database file and a real GSMA simulator; the role matrix and maker-checker refusals; a wrong
//! password, a missing user and a disabled user refused; a missing or bad payments configuration
//! refused naming the variable or the field. SQLite, or PostgreSQL with `CVA_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;
use cva_access::{AccessStore, UserId};
use cva_ledger::audit::AuditContext;
use cva_ledger::testing::FreshDatabase;
use cva_providers::sim::{SimConfig, Simulator};
use serde_json::{json, Value};

const P: &str = "MLI-MPCA-24";
const PASSWORD: &str = "correct horse battery staple";
const HEADER: &str = "start,end,today,enumerator,consent,household/head_name,household/head_sex,household/head_birth_year,household/size,household/displacement_status,location/region,location/cercle,location/commune,contact/msisdn,identity/national_id,identity/biometric_ref,_id,_uuid,_submission_time,_index";

fn row(n: u32, name: &str, msisdn: &str) -> String {
    format!(
        "2024-03-01T08:00:00,2024-03-01T08:20:00,2024-03-01,enum-01,yes,{name},female,19{n}0,{n},idp,ML05,ML0501,ML05010{n},{msisdn},NINA000000000{n}A,,{n},6f1c2a4e-8d3b-4c5a-9e7f-{n:012},2024-03-01T10:22:33,{n}"
    )
}

struct Cli {
    db: FreshDatabase,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Cli {
    fn command(&self) -> Command {
        let mut c = Command::cargo_bin("cva").unwrap();
        c.env("DATABASE_URL", &self.db.url)
            .env("CVA_PII_KEY_FILE", self.dir.path().join("pii.keys"))
            .env("CVA_PAYMENTS_CONFIG", &self.config)
            .env_remove("CVA_USER")
            .env_remove("CVA_PASSWORD")
            .current_dir(self.dir.path())
            .timeout(std::time::Duration::from_secs(120));
        c
    }

    /// A setup command, audited as `cli:USER`.
    fn setup(&self, user: &str, args: &[&str]) -> String {
        let out = self
            .command()
            .env("USER", user)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cva {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `cva ARGS --user USER` with the password in `CVA_PASSWORD`.
    fn run_as(&self, user: &str, args: &[&str]) -> Output {
        self.command()
            .env("CVA_PASSWORD", PASSWORD)
            .args(args)
            .args(["--user", user])
            .output()
            .unwrap()
    }

    fn ok_as(&self, user: &str, args: &[&str]) -> String {
        let out = self.run_as(user, args);
        assert!(
            out.status.success(),
            "cva {args:?} as {user} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json_as(&self, user: &str, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        serde_json::from_str(&self.ok_as(user, &all)).unwrap()
    }

    /// Runs as `user`, expects a refusal, returns its message.
    fn refused_as(&self, user: &str, args: &[&str]) -> String {
        let out = self.run_as(user, args);
        assert!(
            !out.status.success(),
            "cva {args:?} as {user} should have been refused: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn config(base_url: &str, token_file: &str, currency: &str) -> String {
    json!({
        "providers": [
            {"name": "orange-money", "adapter": "gsma-mmapi", "base_url": base_url,
             "credentials": {"file": token_file}, "currency": currency, "operators": ["orange-ml"],
             "min_amount": "500", "max_amount": "1000000", "fees": {"percent": "1", "minimum": "100"}}
        ],
        "approvals": [{"above": "0", "approvals": 1, "authorisations": 1, "releases": 1}]
    })
    .to_string()
}

// The simulator serves on the runtime's worker threads while the test thread waits for `cva`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_officers_and_finance_take_a_batch_from_draft_to_paid_on_the_command_line() {
    let sim = Simulator::spawn(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("orange.token");
    std::fs::write(&token, "sim-token\n").unwrap();
    let config_path = dir.path().join("payments.json");
    std::fs::write(
        &config_path,
        config(&sim.base_url, &token.display().to_string(), "XOF"),
    )
    .unwrap();
    let cli = Cli {
        db: FreshDatabase::create().await,
        dir,
        config: config_path,
    };

    // ---- a programme with two verified households on Orange, each owed 20,000 XOF.
    cli.setup(
        "setup",
        &[
            "programmes",
            "create",
            "--code",
            P,
            "--name",
            "MPCA Mopti",
            "--donor",
            "ECHO",
            "--grant",
            "ECHO/2024/1",
            "--currency",
            "XOF",
            "--reporting-currency",
            "EUR",
            "--starts",
            "2024-01-01",
            "--ends",
            "2024-12-31",
            "--region",
            "ML05",
        ],
    );
    cli.setup(
        "setup",
        &[
            "programmes",
            "budget-line",
            "--programme",
            P,
            "--code",
            "mpca",
            "--modality",
            "mpca",
            "--amount",
            "1000000",
        ],
    );
    cli.setup(
        "setup",
        &[
            "programmes",
            "fund",
            "--programme",
            P,
            "--line",
            "mpca",
            "--amount",
            "1000000",
            "--reference",
            "ECHO-1",
            "--date",
            "2024-03-01",
        ],
    );
    std::fs::write(
        cli.path("rule.json"),
        r#"{"modality":"mpca","amount":{"kind":"flat","amount":20000},"tranches":1,"rounding":{"unit":25,"mode":"nearest"}}"#,
    )
    .unwrap();
    cli.setup(
        "setup",
        &[
            "programmes",
            "rule",
            "--programme",
            P,
            "--file",
            &cli.path("rule.json"),
        ],
    );
    let csv = format!(
        "{HEADER}\n{}\n{}\n",
        row(1, "Awa Sangare", "+223 76 10 00 11"),
        row(2, "Bakary Cisse", "+223 76 10 00 12")
    );
    std::fs::write(cli.path("hh.csv"), csv).unwrap();
    cli.setup(
        "enumerator",
        &[
            "households",
            "import",
            "--programme",
            P,
            "--file",
            &cli.path("hh.csv"),
        ],
    );
    let listed: Value = serde_json::from_str(&cli.setup(
        "setup",
        &["households", "list", "--programme", P, "--format", "json"],
    ))
    .unwrap();
    for h in listed.as_array().unwrap() {
        cli.setup("checker", &["households", "verify", &h["id"].to_string()]);
    }
    cli.setup(
        "setup",
        &[
            "entitlements",
            "generate",
            "--programme",
            P,
            "--cycle",
            "2024-03",
            "--date",
            "2024-03-01",
        ],
    );
    for (name, role) in [
        ("officer", "programme_officer"),
        ("fin1", "finance_officer"),
        ("fin2", "finance_officer"),
        ("fin3", "finance_officer"),
    ] {
        let out = cli
            .command()
            .args([
                "user",
                "add",
                "--username",
                name,
                "--role",
                role,
                "--password-stdin",
            ])
            .write_stdin(format!("{PASSWORD}\n"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    // ---- configuration: missing, or refused naming the field.
    let out = cli
        .command()
        .env_remove("CVA_PAYMENTS_CONFIG")
        .env("CVA_PASSWORD", PASSWORD)
        .args(["batches", "show", "1", "--user", "officer"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no payment providers configured: set CVA_PAYMENTS_CONFIG"),
        "{err}"
    );
    std::fs::write(
        cli.path("bad.json"),
        config(&sim.base_url, &token.display().to_string(), "XYZ"),
    )
    .unwrap();
    let out = cli
        .command()
        .env("CVA_PASSWORD", PASSWORD)
        .args(["--payments-config", &cli.path("bad.json")])
        .args(["providers", "list", "--user", "officer"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("providers[0].currency"), "{err}");
    // The server refuses to start on it too (without one it starts; see http_batches.rs).
    let out = cli
        .command()
        .env(
            "CVA_JWT_SECRET",
            "Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3A=",
        )
        .env("CVA_PAYMENTS_CONFIG", cli.path("bad.json"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to start") && err.contains("providers[0].currency"),
        "{err}"
    );

    // ---- who acts: a user is required; a wrong password and an unknown user are refused.
    let out = cli
        .command()
        .env("CVA_PASSWORD", PASSWORD)
        .args(["batches", "create", "--programme", P])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--user"));
    for (user, password) in [("officer", "not the password at all"), ("nobody", PASSWORD)] {
        let out = cli
            .command()
            .env("CVA_PASSWORD", password)
            .args(["batches", "create", "--programme", P, "--user", user])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("wrong password"), "{err}");
        assert!(
            !err.contains(password),
            "the password is never printed: {err}"
        );
    }
    // Nothing was created by the refused attempts.
    let out = cli.refused_as("officer", &["batches", "show", "1"]);
    assert!(out.contains("batch 1 does not exist"), "{out}");

    // ---- create (password on standard input) and submit: the officer.
    let refused = cli.refused_as("fin1", &["batches", "create", "--programme", P]);
    assert!(refused.contains("programme_officer"), "{refused}");
    let out = cli
        .command()
        .env("CVA_USER", "officer")
        .args([
            "batches",
            "create",
            "--programme",
            P,
            "--cycle",
            "2024-03",
            "--format",
            "json",
        ])
        .write_stdin(format!("{PASSWORD}\n"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    let b = &made["batches"][0];
    assert_eq!(
        (
            &b["provider"],
            &b["line_count"],
            &b["total"],
            &b["fees"],
            &b["prepared_by"]
        ),
        (
            &json!("orange-money"),
            &json!(2),
            &json!(40_000),
            &json!(400),
            &json!("officer")
        ),
        "{made}"
    );
    let id = b["id"].to_string();
    let id = id.as_str();
    let refused = cli.refused_as("fin1", &["batches", "submit", id]);
    assert!(refused.contains("programme_officer"), "{refused}");
    let v = cli.json_as("officer", &["batches", "submit", id]);
    assert_eq!(v["status"], "submitted");

    // ---- sign-offs: finance only, one person per step.
    let refused = cli.refused_as("officer", &["batches", "approve", id]);
    assert!(refused.contains("finance_officer"), "{refused}");
    let out = cli.ok_as("fin1", &["batches", "approve", id]);
    assert!(out.contains("approved") && out.contains("fin1"), "{out}");
    let refused = cli.refused_as("fin1", &["batches", "authorise", id]);
    assert!(refused.contains("already signed"), "{refused}");
    let v = cli.json_as("fin2", &["batches", "authorise", id]);
    assert_eq!(v["status"], "authorised");
    let refused = cli.refused_as("fin3", &["batches", "release", id]);
    assert!(refused.contains("cannot cover"), "{refused}");

    // ---- the float: finance funds it; a bad amount is refused naming the field.
    let refused = cli.refused_as(
        "fin1",
        &[
            "providers",
            "fund",
            "--provider",
            "orange-money",
            "--amount",
            "100000.5",
            "--from",
            "assets:bank",
            "--reference",
            "BANK-1",
        ],
    );
    assert!(refused.contains("amount"), "{refused}");
    let refused = cli.refused_as(
        "officer",
        &[
            "providers",
            "fund",
            "--provider",
            "orange-money",
            "--amount",
            "100000",
            "--from",
            "assets:bank",
            "--reference",
            "BANK-1",
        ],
    );
    assert!(refused.contains("finance_officer"), "{refused}");
    let f = cli.json_as(
        "fin1",
        &[
            "providers",
            "fund",
            "--provider",
            "orange-money",
            "--amount",
            "100000",
            "--from",
            "assets:bank",
            "--reference",
            "BANK-1",
        ],
    );
    assert_eq!(f["float"], 100_000);

    // ---- release and send (with the simulator), then read it back.
    let v = cli.json_as("fin3", &["batches", "release", id]);
    assert_eq!(v["status"], "released");
    let r = cli.json_as(
        "fin1",
        &[
            "batches",
            "send",
            id,
            "--poll-ms",
            "50",
            "--settle-secs",
            "20",
            "--timeout-secs",
            "5",
        ],
    );
    assert_eq!(
        (
            &r["batch"]["status"],
            &r["completed"],
            &r["failed"],
            &r["unknown"]
        ),
        (&json!("completed"), &json!(2), &json!(0), &json!(0)),
        "{r}"
    );
    let shown = cli.ok_as("officer", &["batches", "show", id]);
    assert!(
        shown.contains("completed") && shown.contains("settled"),
        "{shown}"
    );
    let checked = cli.ok_as("fin2", &["batches", "check-reversals", id]);
    assert!(
        checked.contains("no completed payment has been reversed"),
        "{checked}"
    );
    let out = cli.refused_as("fin2", &["batches", "export", id, "--out", "/dev/null"]);
    assert!(
        out.contains("orange-money"),
        "an API provider's batch is not exported: {out}"
    );
    let listed = cli.json_as("fin2", &["batches", "list", "--status", "completed"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"].to_string(), id);
    let none = cli.json_as("fin2", &["batches", "list", "--status", "draft"]);
    assert_eq!(none, json!([]));
    let d = cli.json_as("officer", &["batches", "show", id]);
    assert_eq!(d["lines"]["completed"], 2);
    assert_eq!(
        d["batch"]["signoffs"],
        json!([{"step": "approve", "by": "fin1"}, {"step": "authorise", "by": "fin2"},
               {"step": "release", "by": "fin3"}])
    );
    let lines = cli.ok_as("fin2", &["batches", "lines", id, "--format", "csv"]);
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert!(lines.starts_with("line,entitlement,household,amount,fee,status"));
    assert!(
        !lines.contains("7610") && !lines.contains("Sangare"),
        "{lines}"
    );
    let floats = cli.json_as("fin2", &["providers", "list"]);
    assert_eq!(
        (
            &floats[0]["float"],
            &floats[0]["in_transit"],
            &floats[0]["fees"]
        ),
        (&json!(59_600), &json!(0), &json!(400))
    );
    let table = cli.ok_as("fin2", &["providers", "list"]);
    assert!(
        table.contains("orange-money") && table.contains("59600"),
        "{table}"
    );

    // ---- a disabled user is refused like a wrong password.
    let ledger = cva_ledger::Ledger::connect(&cli.db.url).await.unwrap();
    let store = AccessStore::new(ledger.clone());
    let fin3 = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.username.as_str() == "fin3")
        .unwrap();
    let admin = AuditContext {
        actor_id: None,
        actor: "test".into(),
        role: "operator".into(),
        request_id: "test".into(),
    };
    store
        .set_disabled(UserId(fin3.id.0), true, &admin)
        .await
        .unwrap();
    let refused = cli.refused_as("fin3", &["batches", "show", id]);
    assert!(refused.contains("disabled"), "{refused}");

    // ---- audited as the users, under the role that allowed each step, request ids `cli-…`.
    let events: Value = serde_json::from_str(&cli.setup(
        "setup",
        &[
            "audit",
            "list",
            "--object-type",
            "batch",
            "--object-id",
            id,
            "--format",
            "json",
        ],
    ))
    .unwrap();
    let who: Vec<(String, String, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            [
                "batch.create",
                "batch.submit",
                "batch.approve",
                "batch.authorise",
                "batch.release",
            ]
            .contains(&e["action"].as_str().unwrap())
        })
        .map(|e| {
            assert!(e["request_id"].as_str().unwrap().starts_with("cli-"), "{e}");
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
                e["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let t = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        who,
        [
            t("batch.create", "officer", "programme_officer"),
            t("batch.submit", "officer", "programme_officer"),
            t("batch.approve", "fin1", "finance_officer"),
            t("batch.authorise", "fin2", "finance_officer"),
            t("batch.release", "fin3", "finance_officer"),
        ]
    );
    // The provider's statement: imported by finance once; the same file again refused; a
    // programme officer may not import.
    let statement = cli.path("statement.csv");
    std::fs::write(&statement, sim.statement_csv()).unwrap();
    let args = [
        "statements",
        "import",
        "--provider",
        "orange-money",
        "--file",
        statement.as_str(),
        "--mapping",
        "simulator",
    ];
    let out = cli.refused_as("officer", &args);
    assert!(out.contains("finance_officer"), "{out}");
    let imported = cli.json_as("fin1", &args);
    assert_eq!(imported["lines"], 2, "{imported}");
    assert_eq!(imported["provider"], "orange-money");
    let out = cli.refused_as("fin1", &args);
    assert!(out.contains("already imported"), "{out}");
    // Reconciled by finance (a programme officer may only read), then read back by the programme officer.
    let sid = imported["id"].as_i64().unwrap().to_string();
    let out = cli.refused_as("officer", &["statements", "reconcile", &sid]);
    assert!(out.contains("finance_officer"), "{out}");
    let run = cli.json_as("fin1", &["statements", "reconcile", &sid]);
    assert_eq!(run["run_no"], 1, "{run}");
    assert_eq!(run["payments_considered"], 2, "{run}");
    assert_eq!(
        run["summary"]["matched"].as_i64().unwrap()
            + run["summary"]["fee_mismatch"].as_i64().unwrap(),
        2,
        "{run}"
    );
    assert_eq!(run["float"]["unexplained"], 0, "{run}");
    let again = cli.json_as("fin1", &["statements", "reconcile", &sid]);
    assert_eq!(
        (again["run_no"].as_i64(), again["outcomes_posted"].as_i64()),
        (Some(2), Some(0))
    );
    let shown = cli.json_as("officer", &["statements", "show", &sid]);
    assert_eq!(shown["runs"].as_array().unwrap().len(), 2, "{shown}");
    let rid = run["id"].as_i64().unwrap().to_string();
    let table = cli.ok_as("officer", &["statements", "run", &rid, "--items", "all"]);
    assert!(table.contains("provider_transaction_id"), "{table}");
    assert!(table.contains("unexplained 0"), "{table}");
    std::fs::write(&statement, "transaction_id,amount\nX,abc\n").unwrap();
    let out = cli.refused_as("fin1", &args);
    assert!(
        out.contains("bad row") || out.contains("completed_at"),
        "{out}"
    );
    ledger.close().await;
    sim.shutdown().await;
    cli.db.drop_database().await;
}

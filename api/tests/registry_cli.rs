//! The registry from the command line, end to end on generated fixtures: every class of bad row
//! rejected with its row, column and reason and nothing written; the good file imported with the
//! planted duplicates flagged; re-import idempotent; dry run; four-eyes verification; a cycle of
//! entitlements. SQLite, or PostgreSQL with `CVA_TEST_DATABASE_URL`.

#![allow(clippy::unwrap_used)]

use std::process::Output;

use assert_cmd::Command;
use cva_ledger::testing::FreshDatabase;
use serde_json::Value;

struct Cli {
    db: FreshDatabase,
    dir: tempfile::TempDir,
}

impl Cli {
    async fn new() -> Cli {
        Cli {
            db: FreshDatabase::create().await,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run_as(&self, user: &str, args: &[&str]) -> Output {
        Command::cargo_bin("cva")
            .unwrap()
            .env("DATABASE_URL", &self.db.url)
            .env("CVA_PII_KEY_FILE", self.dir.path().join("pii.keys"))
            .env("USER", user)
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap()
    }

    fn ok_as(&self, user: &str, args: &[&str]) -> String {
        let out = self.run_as(user, args);
        assert!(
            out.status.success(),
            "cva {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_as("officer", args)
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

const P: &str = "MLI-MPCA-24";

#[tokio::test]
async fn kobo_export_to_verified_households_with_entitlements() {
    let cli = Cli::new().await;
    let fx = cli.path("fx");
    cli.ok(&[
        "fixtures",
        "generate",
        "--households",
        "300",
        "--seed",
        "3",
        "--out",
        &fx,
    ]);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{fx}/manifest.json")).unwrap())
            .unwrap();
    cli.ok(&[
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
        "--region",
        "ML06",
        "--region",
        "ML07",
    ]);
    cli.ok(&[
        "programmes",
        "budget-line",
        "--programme",
        P,
        "--code",
        "mpca",
        "--modality",
        "mpca",
        "--amount",
        "500000000",
    ]);
    std::fs::write(
        cli.path("rule.json"),
        r#"{"modality":"mpca","amount":{"kind":"flat","amount":75000},"tranches":1,"rounding":{"unit":25,"mode":"nearest"}}"#,
    )
    .unwrap();
    assert!(cli
        .ok(&[
            "programmes",
            "rule",
            "--programme",
            P,
            "--file",
            &cli.path("rule.json")
        ])
        .contains("version 1"));

    // Every class of bad row, each with its row, column and reason; nothing written.
    let out = cli.run_as(
        "officer",
        &[
            "households",
            "import",
            "--programme",
            P,
            "--file",
            &format!("{fx}/households-bad.csv"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap().to_lowercase();
    let expected = std::fs::read_to_string(format!("{fx}/households-bad.expected.csv")).unwrap();
    let mut classes = 0;
    for line in expected.lines().skip(1) {
        let mut cells = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_bytes());
        let rec = cells.records().next().unwrap().unwrap();
        let (row, column, keyword) = (&rec[0], &rec[1], &rec[2]);
        let found = stderr.lines().any(|l| {
            l.starts_with(&format!("{row},"))
                && l.contains(&column.to_lowercase())
                && l.contains(&keyword.to_lowercase())
        });
        assert!(
            found,
            "row {row} column {column} ({keyword}) not reported:\n{stderr}"
        );
        classes += 1;
    }
    assert_eq!(classes, manifest["bad_rows"].as_u64().unwrap() as usize);
    assert!(stderr.contains("nothing was imported"));
    let listed = cli.ok(&["households", "list", "--programme", P, "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&listed)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // A dry run reports without writing.
    let good = format!("{fx}/households.csv");
    let dry: Value = serde_json::from_str(&cli.ok(&[
        "households",
        "import",
        "--programme",
        P,
        "--file",
        &good,
        "--dry-run",
    ]))
    .unwrap();
    assert_eq!(dry["created"], manifest["households"]);
    let listed = cli.ok(&["households", "list", "--programme", P, "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&listed)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // The real import: exact counts, planted exact duplicates all flagged.
    let r: Value =
        serde_json::from_str(&cli.ok(&["households", "import", "--programme", P, "--file", &good]))
            .unwrap();
    assert_eq!(r["rows"], manifest["households"]);
    assert_eq!(r["created"], manifest["households"]);
    let planted = |k: &str| manifest["planted"][k].as_array().unwrap().len() as u64;
    assert_eq!(
        r["flags"]["same_national_id"].as_u64().unwrap(),
        planted("same_national_id")
    );
    assert_eq!(
        r["flags"]["same_biometric_ref"].as_u64().unwrap(),
        planted("same_biometric_ref")
    );
    assert!(r["flags"]["shared_phone"].as_u64().unwrap() >= planted("shared_phone"));
    assert!(r["flags"]["similar_name"].as_u64().unwrap() >= 1);
    let again: Value =
        serde_json::from_str(&cli.ok(&["households", "import", "--programme", P, "--file", &good]))
            .unwrap();
    assert_eq!(
        (again["created"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), manifest["households"].as_u64())
    );

    // Masked by default; the database file holds no plaintext.
    let hs: Value = serde_json::from_str(&cli.ok(&[
        "households",
        "list",
        "--programme",
        P,
        "--format",
        "json",
    ]))
    .unwrap();
    let hs = hs.as_array().unwrap();
    assert_eq!(hs.len() as u64, manifest["households"].as_u64().unwrap());
    assert!(hs
        .iter()
        .all(|h| h["masked"] == true && h["head_name"].as_str().unwrap().contains('•')));

    // Four eyes, then the cycle.
    let id = hs[0]["id"].to_string();
    let out = cli.run_as("officer", &["households", "verify", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("another person must verify"));
    for h in hs {
        cli.ok_as("checker", &["households", "verify", &h["id"].to_string()]);
    }
    cli.ok_as(
        "finance",
        &[
            "programmes",
            "fund",
            "--programme",
            P,
            "--line",
            "mpca",
            "--amount",
            "500000000",
            "--reference",
            "ECHO-TT-1",
        ],
    );
    let g: Value = serde_json::from_str(&cli.ok(&[
        "entitlements",
        "generate",
        "--programme",
        P,
        "--cycle",
        "2024-03",
    ]))
    .unwrap();
    let flagged = g["flagged"].as_u64().unwrap();
    assert!(flagged > 0);
    assert_eq!(
        g["created"].as_u64().unwrap() + flagged,
        manifest["households"].as_u64().unwrap()
    );
    let budget = cli.ok(&["programmes", "budget", "--programme", P, "--format", "json"]);
    let b: Value = serde_json::from_str(&budget).unwrap();
    assert_eq!(
        b[0]["committed"].as_u64().unwrap(),
        g["amount"].as_u64().unwrap()
    );

    // Cash-for-work attendance from the fixture sheet; a shelter milestone under four eyes.
    let att: Value = serde_json::from_str(&cli.ok(&[
        "cfw",
        "import-attendance",
        "--programme",
        P,
        "--cycle",
        "2024-03",
        "--from",
        "2024-03-01",
        "--to",
        "2024-03-31",
        "--file",
        &format!("{fx}/attendance.csv"),
    ]))
    .unwrap();
    assert!(att["households"].as_u64().unwrap() > 0, "{att}");
    cli.ok(&[
        "milestones",
        "report",
        "--household",
        &id,
        "--milestone",
        "walls",
        "--on",
        "2024-03-10",
    ]);
    let out = cli.run_as(
        "officer",
        &[
            "milestones",
            "verify",
            "--household",
            &id,
            "--milestone",
            "walls",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "the reporter cannot verify");
    cli.ok_as(
        "checker",
        &[
            "milestones",
            "verify",
            "--household",
            &id,
            "--milestone",
            "walls",
        ],
    );
    cli.db.drop_database().await;
}

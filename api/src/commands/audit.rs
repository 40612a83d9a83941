//! `cva audit …`: read and verify the hash-chained audit trail; and the audit context of the
//! command line's own changes.

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, Utc};
use cva_ledger::audit::{AuditContext, AuditEvent, AuditQuery};
use cva_ledger::Ledger;

use crate::cli::{AuditCommand, Format};
use crate::output::table;

/// Who the command line acts as in the audit trail: `cli:$USER` (or `cli`), role `operator`,
/// and a fresh request id for this invocation.
pub fn cli_context() -> AuditContext {
    let user = std::env::var("USER")
        .ok()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty() && u.chars().count() <= 200 && !u.chars().any(char::is_control));
    AuditContext {
        actor_id: None,
        actor: user.map_or_else(|| "cli".to_owned(), |u| format!("cli:{u}")),
        role: "operator".to_owned(),
        request_id: uuid::Uuid::now_v7().to_string(),
    }
}

pub async fn run(ledger: &Ledger, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify { expect_head } => {
            let v = ledger.verify_audit_anchored(expect_head.as_ref()).await?;
            if let Some(b) = v.broken {
                bail!("{b}");
            }
            println!("ok: {} events, chain intact", v.events);
            if let Some(head) = v.head {
                println!("head: {head}");
            }
        }
        AuditCommand::List {
            actor,
            action,
            object_type,
            object_id,
            from,
            to,
            after_seq,
            limit,
            format,
        } => {
            let query = AuditQuery {
                actor,
                action,
                object_type,
                object_id,
                from: from
                    .as_deref()
                    .map(|s| parse_start("--from", s))
                    .transpose()?,
                to: to.as_deref().map(|s| parse_start("--to", s)).transpose()?,
                after_seq,
                limit,
            };
            let events = ledger
                .audit_events(&query)
                .await
                .context("cannot read the audit trail")?;
            print_events(&events, format)?;
            if events.len() == limit as usize {
                if let Some(last) = events.last() {
                    eprintln!("more events may follow: add --after-seq {}", last.seq);
                }
            }
        }
    }
    Ok(())
}

fn print_events(events: &[AuditEvent], format: Format) -> anyhow::Result<()> {
    let time = |e: &AuditEvent| e.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(events)?),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(std::io::stdout().lock());
            w.write_record([
                "seq",
                "at",
                "actor_id",
                "actor",
                "role",
                "action",
                "object_type",
                "object_id",
                "request_id",
                "digest",
                "prev_hash",
                "hash",
            ])?;
            for e in events {
                w.write_record([
                    e.seq.to_string().as_str(),
                    &time(e),
                    &e.actor_id.map(|i| i.to_string()).unwrap_or_default(),
                    &e.actor,
                    &e.role,
                    &e.action,
                    &e.object_type,
                    &e.object_id,
                    &e.request_id,
                    &e.digest,
                    &e.prev_hash,
                    &e.hash,
                ])?;
            }
            w.flush()?;
        }
        Format::Table => {
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    vec![
                        e.seq.to_string(),
                        time(e),
                        e.actor.clone(),
                        e.role.clone(),
                        e.action.clone(),
                        format!("{} {}", e.object_type, e.object_id),
                        e.request_id.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["seq", "at", "actor", "role", "action", "object", "request"],
                    &rows,
                    &[0]
                )
            );
        }
    }
    Ok(())
}

/// RFC 3339, or a date meaning the start of that day (UTC).
fn parse_start(flag: &str, s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Some(t) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(t.and_utc());
    }
    bail!("{flag} `{s}` is not a time: use RFC 3339 (2024-03-01T12:00:00Z) or a date (2024-03-01)")
}

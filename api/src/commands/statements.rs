//! `cva statements …`: import a provider's statement, reconcile it against the payments and
//! read the runs, as an authenticated user under the API's role matrix (finance officers
//! import and reconcile; every role reads). Phone numbers in a statement are replaced by the
//! registry's keyed index at import (see `cva_reconciliation::store`); nothing printed here
//! carries one.

use anyhow::{anyhow, Context};
use cva_batches::Batches;
use cva_reconciliation::run::StoredItem;
use cva_reconciliation::{
    Category, ColumnMapping, ImportError, Reconciler, RunOptions, RunView, Statements,
};
use serde::Serialize;

use super::batches::{json_out, major, Me};
use crate::cli::{ShowFormat, StatementCommand};
use crate::output::table;
use crate::payments::Action;

fn refused(e: impl std::error::Error + Send + Sync + 'static) -> anyhow::Error {
    anyhow::Error::new(e).context("refused")
}

pub(super) async fn run(
    ledger: &cva_ledger::Ledger,
    batches: &Batches,
    me: &Me,
    cmd: StatementCommand,
) -> anyhow::Result<()> {
    let reconciler = Reconciler::new(batches.clone());
    match cmd {
        StatementCommand::Import {
            provider,
            file,
            mapping,
            format,
        } => {
            let ctx = me.may(Action::ImportStatement)?;
            let p = batches.config().provider(&provider).ok_or_else(|| {
                anyhow!("no provider `{provider}` is configured").context("refused")
            })?;
            let mapping = match mapping.as_str() {
                "simulator" => ColumnMapping::simulator(),
                "generic" => ColumnMapping::generic(),
                path => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read the mapping {path}"))?;
                    ColumnMapping::from_json(&text)
                        .map_err(|e| anyhow!("mapping {path}: {e}").context("refused"))?
                }
            };
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let registry = batches.registry();
            let index = |m: &str| registry.msisdn_index(m);
            match Statements::new(ledger.clone())
                .import_indexed(&p.name, &bytes, &mapping, p.currency, &index, &ctx)
                .await
            {
                Ok(s) => {
                    if format == ShowFormat::Json {
                        return json_out(&s);
                    }
                    println!(
                        "statement {} of {}: {} lines, sha256 {}",
                        s.id, s.provider, s.lines, s.sha256
                    );
                    Ok(())
                }
                Err(ImportError::BadRows(rows)) => {
                    let mut w = csv::Writer::from_writer(std::io::stderr().lock());
                    w.write_record(["row", "column", "reason"])?;
                    for r in rows.iter().take(1000) {
                        w.write_record([r.row.to_string(), r.column.clone(), r.reason.clone()])?;
                    }
                    w.flush()?;
                    Err(anyhow!(
                        "the file has {} bad row(s); nothing was imported",
                        rows.len()
                    )
                    .context("refused"))
                }
                Err(e) => Err(refused(e)),
            }
        }
        StatementCommand::Show { id, format } => {
            me.may(Action::Read)?;
            let statement = reconciler
                .statements()
                .statement(id)
                .await
                .map_err(refused)?;
            let runs = reconciler.runs(id).await.map_err(refused)?;
            if format == ShowFormat::Json {
                #[derive(Serialize)]
                struct Out<'a> {
                    statement: &'a cva_reconciliation::ImportedStatement,
                    runs: &'a [RunView],
                }
                return json_out(&Out {
                    statement: &statement,
                    runs: &runs,
                });
            }
            let cur = statement.currency.code();
            println!(
                "statement {} of {} ({} lines, {} to {}), sha256 {}",
                statement.id,
                statement.provider,
                statement.lines,
                statement
                    .period_start
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                statement
                    .period_end
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default(),
                statement.sha256
            );
            println!(
                "  opening {}  closing {} {cur}; imported by {} at {}",
                statement
                    .opening_balance
                    .map(|a| a.number())
                    .unwrap_or_else(|| "-".into()),
                statement
                    .closing_balance
                    .map(|a| a.number())
                    .unwrap_or_else(|| "-".into()),
                statement.imported_by,
                statement.imported_at.to_rfc3339()
            );
            for r in &runs {
                print_run(r);
            }
            if runs.is_empty() {
                println!("  not reconciled yet: `cva statements reconcile {id}`");
            }
            Ok(())
        }
        StatementCommand::Reconcile {
            id,
            window_hours,
            format,
        } => {
            let ctx = me.may(Action::Reconcile)?;
            if !(0..=744).contains(&window_hours) {
                return Err(anyhow!("--window-hours must be 0 to 744").context("refused"));
            }
            let run = reconciler
                .run(
                    id,
                    RunOptions {
                        window: chrono::Duration::hours(window_hours),
                    },
                    &ctx,
                )
                .await
                .map_err(refused)?;
            if format == ShowFormat::Json {
                return json_out(&run);
            }
            print_run(&run);
            Ok(())
        }
        StatementCommand::Run {
            id,
            items,
            limit,
            format,
        } => {
            me.may(Action::Read)?;
            let run = reconciler.get(id).await.map_err(refused)?;
            let float_lines = reconciler.float_lines(id).await.map_err(refused)?;
            let limit = limit.clamp(1, cva_reconciliation::run::MAX_ITEMS_PAGE);
            let shown: Vec<StoredItem> = match items.as_str() {
                "all" => reconciler
                    .items(id, None, 0, limit)
                    .await
                    .map_err(refused)?,
                "exceptions" => {
                    let mut out = Vec::new();
                    for c in Category::ALL
                        .into_iter()
                        .filter(|c| *c != Category::Matched)
                    {
                        if out.len() >= limit as usize {
                            break;
                        }
                        let room = limit - u32::try_from(out.len()).unwrap_or(limit);
                        out.extend(
                            reconciler
                                .items(id, Some(c), 0, room)
                                .await
                                .map_err(refused)?,
                        );
                    }
                    out
                }
                c => {
                    let category = Category::ALL
                        .into_iter()
                        .find(|k| k.as_str() == c)
                        .ok_or_else(|| {
                            anyhow!("--items: `all`, `exceptions` or a category").context("refused")
                        })?;
                    reconciler
                        .items(id, Some(category), 0, limit)
                        .await
                        .map_err(refused)?
                }
            };
            if format == ShowFormat::Json {
                #[derive(Serialize)]
                struct Out<'a> {
                    run: &'a RunView,
                    float_lines: &'a [cva_reconciliation::run::FloatLine],
                    items: &'a [StoredItem],
                }
                return json_out(&Out {
                    run: &run,
                    float_lines: &float_lines,
                    items: &shown,
                });
            }
            print_run(&run);
            let cur = run.float.currency.as_str();
            if !float_lines.is_empty() {
                println!("\n  float differences that are not items:");
                let rows: Vec<Vec<String>> = float_lines
                    .iter()
                    .map(|f| vec![f.kind.clone(), major(f.amount, cur), f.detail.clone()])
                    .collect();
                print!("{}", table(&["kind", "amount", "detail"], &rows, &[1]));
            }
            println!();
            let rows: Vec<Vec<String>> = shown
                .iter()
                .map(|i| {
                    vec![
                        i.category.clone(),
                        i.rule.clone().unwrap_or_default(),
                        i.line_id.map(|l| l.to_string()).unwrap_or_default(),
                        i.statement_rows
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        major(i.float_effect, cur),
                        i.action.clone().unwrap_or_default(),
                        i.detail.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "category",
                        "rule",
                        "line",
                        "rows",
                        "float effect",
                        "action",
                        "detail"
                    ],
                    &rows,
                    &[4]
                )
            );
            Ok(())
        }
    }
}

fn print_run(r: &RunView) {
    let s = &r.summary;
    let f = &r.float;
    let cur = f.currency.as_str();
    let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |m| major(m, cur));
    println!(
        "reconciliation {} (run {} of statement {}, {}) by {} at {}",
        r.id,
        r.run_no,
        r.statement_id,
        r.provider,
        r.run_by,
        r.run_at.to_rfc3339()
    );
    println!(
        "  {} payments considered; matched {}, amount mismatch {}, fee mismatch {}, status \
         mismatch {}, missing from statement {}, unexpected in statement {}, duplicate in \
         statement {}, reversed by provider {}",
        r.payments_considered,
        s.matched,
        s.amount_mismatch,
        s.fee_mismatch,
        s.status_mismatch,
        s.missing_from_statement,
        s.unexpected_in_statement,
        s.duplicate_in_statement,
        s.reversed_by_provider
    );
    println!(
        "  outcomes posted {}; exceptions opened {}, found again {}",
        r.outcomes_posted, r.exceptions_opened, r.exceptions_seen_again
    );
    println!(
        "  float {}: ledger {} → {}, statement {} → {} {cur}; difference {} = explained {} + \
         unexplained {}",
        f.account,
        major(f.ledger_opening, cur),
        major(f.ledger_closing, cur),
        opt(f.statement_opening),
        opt(f.statement_closing),
        major(f.difference, cur),
        major(f.explained, cur),
        major(f.unexplained, cur)
    );
}

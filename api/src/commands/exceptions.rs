//! `cva exceptions …`: the reconciliation exceptions queue from the command line, acting as an
//! authenticated user (`--user NAME` or `CVA_USER`; the password from `CVA_PASSWORD`, else one
//! line of standard input), checked as the API's login checks it and held to the API's role
//! matrix ([`crate::payments::Action`]): every role reads; finance officers assign, comment,
//! resolve, propose adjustments and approve or reject them — never one they proposed. Every
//! change is audited by the reconciliation crate as that user, with a request id `cli-<uuid>`.
//!
//! Adjustment lines are `ACCOUNT:debit|credit:AMOUNT`, the amount in **major** units of the
//! exception's currency, parsed exactly (`expense:fees:orange-money:debit:500`). Tables show
//! amounts in major units; JSON shows them in minor units, as the API.

use anyhow::{anyhow, Context};
use cva_access::AccessStore;
use cva_reconciliation::exceptions::parse_category;
use cva_reconciliation::{
    AdjustmentLine, AdjustmentView, ExceptionDetail, ExceptionError, ExceptionFilter,
    ExceptionStatus, ExceptionView, Exceptions,
};

use super::batches::{authenticate, json_out, Me};
use crate::cli::{ExceptionCommand, ExceptionsArgs, ShowFormat};
use crate::output::table;
use crate::payments::Action;

/// A refusal of the reconciliation crate as a message (its errors name no personal data).
fn refused(e: ExceptionError) -> anyhow::Error {
    anyhow::Error::new(e).context("refused")
}

/// Runs an `exceptions` command.
pub async fn run(ledger: &cva_ledger::Ledger, args: ExceptionsArgs) -> anyhow::Result<()> {
    let access = AccessStore::new(ledger.clone());
    let user = authenticate(&access, &args.act_as).await?;
    let me = Me {
        user,
        request_id: format!("cli-{}", uuid::Uuid::now_v7()),
    };
    let queue = Exceptions::new(ledger.clone());
    match args.command {
        ExceptionCommand::List {
            status,
            statement,
            assignee,
            category,
            after,
            limit,
            format,
        } => {
            me.may(Action::ReadExceptions)?;
            let filter = ExceptionFilter {
                status: status
                    .as_deref()
                    .map(|s| ExceptionStatus::parse(s.trim()))
                    .transpose()
                    .map_err(refused)?,
                statement_id: statement,
                assignee,
                category: category
                    .as_deref()
                    .map(|c| parse_category(c.trim()))
                    .transpose()
                    .map_err(refused)?,
                after_id: after,
                limit,
            };
            let list = queue.list(&filter).await.map_err(refused)?;
            if format == ShowFormat::Json {
                return json_out(&list);
            }
            print!("{}", exception_table(&list));
            Ok(())
        }
        ExceptionCommand::Show { id, format } => {
            me.may(Action::ReadExceptions)?;
            let detail = queue.get(id).await.map_err(refused)?;
            if format == ShowFormat::Json {
                return json_out(&detail);
            }
            print_detail(&detail);
            Ok(())
        }
        ExceptionCommand::Assign { id, to, format } => {
            let ctx = me.may(Action::WorkException)?;
            if !crate::http::exceptions::eligible_assignee(&access, &to)
                .await
                .context("cannot check the assignee")?
            {
                return Err(anyhow!(crate::http::exceptions::NOT_ELIGIBLE).context("refused"));
            }
            let e = queue.assign(id, &to, &ctx).await.map_err(refused)?;
            exception_out(&e, format)
        }
        ExceptionCommand::Comment { id, note, format } => {
            let ctx = me.may(Action::WorkException)?;
            let e = queue.comment(id, &note, &ctx).await.map_err(refused)?;
            exception_out(&e, format)
        }
        ExceptionCommand::Resolve { id, note, format } => {
            let ctx = me.may(Action::WorkException)?;
            let e = queue.resolve(id, &note, &ctx).await.map_err(refused)?;
            exception_out(&e, format)
        }
        ExceptionCommand::ProposeAdjustment {
            id,
            description,
            lines,
            format,
        } => {
            let ctx = me.may(Action::ProposeAdjustment)?;
            let currency = queue.exception(id).await.map_err(refused)?.currency;
            let lines = lines
                .iter()
                .enumerate()
                .map(|(i, text)| {
                    // ACCOUNT:SIDE:AMOUNT; the account itself holds `:`.
                    let mut parts = text.rsplitn(3, ':');
                    let (amount, side, account) = (parts.next(), parts.next(), parts.next());
                    match (account, side, amount) {
                        (Some(account), Some(side), Some(amount)) => {
                            AdjustmentLine::parse(i, account, side, amount, currency)
                                .map_err(refused)
                        }
                        _ => Err(anyhow!(
                            "lines[{i}]: write --line ACCOUNT:debit|credit:AMOUNT, e.g. \
                             expense:fees:orange-money:debit:500"
                        )
                        .context("refused")),
                    }
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let a = queue
                .propose_adjustment(id, &description, &lines, &ctx)
                .await
                .map_err(refused)?;
            adjustment_out(&a, format)
        }
        ExceptionCommand::ApproveAdjustment { id, note, format } => {
            let ctx = me.may(Action::DecideAdjustment)?;
            let a = queue
                .approve_adjustment(id, note.as_deref(), &ctx)
                .await
                .map_err(refused)?;
            adjustment_out(&a, format)
        }
        ExceptionCommand::RejectAdjustment { id, note, format } => {
            let ctx = me.may(Action::DecideAdjustment)?;
            let a = queue
                .reject_adjustment(id, &note, &ctx)
                .await
                .map_err(refused)?;
            adjustment_out(&a, format)
        }
    }
}

/// Minor units as a decimal in major units of `currency` (`1250` USD → `12.50`).
fn major(minor: i64, currency: cva_ledger::money::Currency) -> String {
    cva_ledger::money::Amount::from_minor(minor, currency).number()
}

fn exception_table(list: &[ExceptionView]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.statement_id.to_string(),
                e.category.as_str().to_owned(),
                e.status.as_str().to_owned(),
                e.assignee.clone().unwrap_or_default(),
                major(e.amount, e.currency),
                e.currency.code().to_owned(),
                e.line_id.map(|l| l.to_string()).unwrap_or_default(),
                e.statement_rows.clone(),
            ]
        })
        .collect();
    table(
        &[
            "id",
            "statement",
            "category",
            "status",
            "assignee",
            "amount",
            "currency",
            "line",
            "rows",
        ],
        &rows,
        &[0, 1, 5],
    )
}

fn exception_out(e: &ExceptionView, format: ShowFormat) -> anyhow::Result<()> {
    if format == ShowFormat::Json {
        return json_out(e);
    }
    print!("{}", exception_table(std::slice::from_ref(e)));
    Ok(())
}

fn adjustment_out(a: &AdjustmentView, format: ShowFormat) -> anyhow::Result<()> {
    if format == ShowFormat::Json {
        return json_out(a);
    }
    print_adjustment(a);
    Ok(())
}

fn print_adjustment(a: &AdjustmentView) {
    let decided = match (&a.decided_by, a.decided_at) {
        (Some(by), Some(at)) => format!(", {} by {by} at {at}", a.status.as_str()),
        _ => String::new(),
    };
    println!(
        "adjustment {} of exception {}: {} (proposed by {} at {}{decided})",
        a.id,
        a.exception_id,
        a.status.as_str(),
        a.proposed_by,
        a.proposed_at
    );
    println!("  {}", a.description);
    if let Some(e) = a.entry_id {
        println!("  entry {e}");
    }
    let rows: Vec<Vec<String>> = a
        .lines
        .iter()
        .map(|l| {
            vec![
                l.account.clone(),
                l.side.as_str().to_owned(),
                major(l.amount, a.currency),
                a.currency.code().to_owned(),
            ]
        })
        .collect();
    for line in table(&["account", "side", "amount", "currency"], &rows, &[2]).lines() {
        println!("  {line}");
    }
}

fn print_detail(d: &ExceptionDetail) {
    let e = &d.exception;
    print!("{}", exception_table(std::slice::from_ref(e)));
    println!("detail: {}", e.detail);
    if let (Some(by), Some(at), Some(resolution)) = (&e.resolved_by, e.resolved_at, &e.resolution) {
        println!("resolved by {by} at {at}: {resolution}");
    }
    println!();
    let rows: Vec<Vec<String>> = d
        .events
        .iter()
        .map(|ev| {
            vec![
                ev.at.to_rfc3339(),
                ev.action.clone(),
                ev.actor.clone(),
                ev.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!("{}", table(&["at", "action", "actor", "note"], &rows, &[]));
    for a in &d.adjustments {
        println!();
        print_adjustment(a);
    }
}

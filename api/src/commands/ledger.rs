//! `cva ledger …`: posting, reversing, balances, trial balance, export, verification.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use chrono::{DateTime, NaiveDate, Utc};
use cva_ledger::account::{AccountCode, AccountSpec, AccountType, BalanceRule};
use cva_ledger::entry::{EntryId, NewEntry};
use cva_ledger::money::{Amount, Currency};
use cva_ledger::posting::Posting;
use cva_ledger::store::TrialBalance;
use cva_ledger::Ledger;

use crate::cli::{ExportFormat, Format, LedgerCommand};
use crate::output::table;

/// Largest entry file accepted (an entry has at most 1000 lines).
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

pub async fn run(ledger: &Ledger, cmd: LedgerCommand) -> anyhow::Result<()> {
    // The changes made by this invocation are audited as one request of `cli:$USER`.
    let audit = super::audit::cli_context();
    match cmd {
        LedgerCommand::Post { file } => {
            let text = read_input(&file)?;
            let entry = NewEntry::from_json(&text).context("the entry was refused")?;
            let posting = ledger
                .post_audited(entry, &audit)
                .await
                .context("the entry was refused")?;
            if let Posting::Replayed(_) = posting {
                eprintln!("note: this idempotency key was already posted with the same content; nothing new was written");
            }
            println!("{}", posting.id());
        }
        LedgerCommand::PostMany { file } => {
            let text = read_input(&file)?;
            let inputs: Vec<serde_json::Value> =
                serde_json::from_str(&text).context("the file must be a JSON array of entries")?;
            let mut entries = Vec::with_capacity(inputs.len());
            for (i, v) in inputs.into_iter().enumerate() {
                let input = serde_json::from_value(v)
                    .with_context(|| format!("entry #{i} was refused: invalid entry"))?;
                entries.push(
                    NewEntry::from_input(input)
                        .with_context(|| format!("entry #{i} was refused"))?,
                );
            }
            let postings = ledger
                .post_many_audited(&entries, &audit)
                .await
                .context("the batch was refused; nothing was written")?;
            for p in postings {
                println!("{}", p.id());
            }
        }
        LedgerCommand::Reverse { entry_id, reason } => {
            let id = EntryId::parse(&entry_id)?;
            let posting = ledger
                .reverse_audited(id, &reason, &audit)
                .await
                .context("the reversal was refused")?;
            println!("{}", posting.id());
        }
        LedgerCommand::Show { entry_id } => {
            let id = EntryId::parse(&entry_id)?;
            let entry = ledger.entry(id).await?;
            println!("{}", serde_json::to_string_pretty(&entry)?);
        }
        LedgerCommand::Balance {
            account,
            as_of,
            format,
        } => {
            let code = AccountCode::parse(&account)?;
            let as_of = as_of.as_deref().map(parse_time).transpose()?;
            let b = ledger.balance(&code, as_of).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&b)?),
                Format::Csv => {
                    println!("account,currency,debit,credit,balance");
                    println!(
                        "{},{},{},{},{}",
                        b.account,
                        b.currency,
                        b.debits.number(),
                        b.credits.number(),
                        b.balance
                    );
                }
                Format::Table => {
                    println!("account   {}", b.account);
                    println!(
                        "type      {} (normal side: {})",
                        b.account_type,
                        b.account_type.normal_side().as_str()
                    );
                    println!("debits    {}", b.debits);
                    println!("credits   {}", b.credits);
                    println!("balance   {} {}", b.balance, b.currency);
                    if let Some(t) = b.as_of {
                        println!("as of     {}", t.to_rfc3339());
                    }
                }
            }
        }
        LedgerCommand::TrialBalance { format } => {
            let tb = ledger.trial_balance().await?;
            print_trial_balance(&tb, format, &mut std::io::stdout().lock())?;
            if !tb.is_balanced() {
                bail!("the trial balance does not net to zero");
            }
        }
        LedgerCommand::Accounts { format } => {
            let accounts = ledger.accounts().await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&accounts)?),
                Format::Csv => {
                    let mut w = csv::Writer::from_writer(std::io::stdout().lock());
                    w.write_record(["account", "type", "currency", "rule"])?;
                    for a in &accounts {
                        w.write_record([
                            a.code.as_str(),
                            a.account_type.as_str(),
                            a.currency.code(),
                            a.rule.as_str(),
                        ])?;
                    }
                    w.flush()?;
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = accounts
                        .iter()
                        .map(|a| {
                            vec![
                                a.code.to_string(),
                                a.account_type.to_string(),
                                a.currency.to_string(),
                                a.rule.as_str().to_owned(),
                                amount(a.balance(), a.currency),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(
                            &["account", "type", "currency", "rule", "balance"],
                            &rows,
                            &[4]
                        )
                    );
                }
            }
        }
        LedgerCommand::Open {
            account,
            currency,
            account_type,
            rule,
        } => {
            let code = AccountCode::parse(&account)?;
            let currency = Currency::parse(&currency)?;
            let default = ledger.policy().spec_for(&code, currency)?;
            let account_type = match account_type {
                Some(t) => AccountType::parse(&t)?,
                None => default.account_type,
            };
            let rule = match rule {
                Some(r) => BalanceRule::parse(&r)?,
                None => default.rule,
            };
            let a = ledger
                .open_account_audited(
                    AccountSpec::new(code, account_type, currency, rule)?,
                    &audit,
                )
                .await?;
            println!(
                "{} {} {} {}",
                a.code,
                a.account_type,
                a.currency,
                a.rule.as_str()
            );
        }
        LedgerCommand::Export { format, output } => {
            let mut out: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let n = match format {
                ExportFormat::Ledger => {
                    cva_ledger::export::write_ledger_journal(ledger, &mut out).await?
                }
                ExportFormat::Jsonl => write_jsonl(ledger, &mut out).await?,
            };
            out.flush()?;
            if output.is_some() {
                eprintln!("{n} entries written");
            }
        }
        LedgerCommand::Verify => {
            let report = ledger.verify().await?;
            let tb = ledger.trial_balance().await?;
            for p in &report.problems {
                println!("problem: {p}");
            }
            if !tb.is_balanced() {
                println!("problem: the trial balance does not net to zero");
            }
            if !report.problems.is_empty() || !tb.is_balanced() {
                bail!("the ledger failed verification");
            }
            println!(
                "ok: {} accounts and {} entries checked; every balance equals the sum of its lines; trial balance nets to zero",
                report.accounts_checked, report.entries_checked
            );
        }
    }
    Ok(())
}

async fn write_jsonl(ledger: &Ledger, out: &mut dyn Write) -> anyhow::Result<u64> {
    use futures::StreamExt;
    let mut n = 0;
    let mut s = ledger.journal();
    while let Some(e) = s.next().await {
        serde_json::to_writer(&mut *out, &e?)?;
        out.write_all(b"\n")?;
        n += 1;
    }
    Ok(n)
}

fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        return Ok(s);
    }
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_FILE_BYTES {
        bail!("{} is larger than {} bytes", path.display(), MAX_FILE_BYTES);
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} as UTF-8 text", path.display()))
}

/// RFC 3339 time, or a date meaning the end of that day (UTC).
pub fn parse_time(s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_micro_opt(23, 59, 59, 999_999) {
            return Ok(t.and_utc());
        }
    }
    bail!("--as-of `{s}` is not a time: use RFC 3339 (2024-03-01T12:00:00Z) or a date (2024-03-01)")
}

fn amount(minor: i128, currency: Currency) -> String {
    i64::try_from(minor)
        .map(|m| Amount::from_minor(m, currency).number())
        .unwrap_or_else(|_| minor.to_string())
}

/// One account of the trial balance report (JSON form); amounts are decimal strings and
/// `balance` is debit − credit.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TrialBalanceRow {
    pub account: String,
    pub currency: String,
    pub debit: String,
    pub credit: String,
    pub balance: String,
}

/// The trial balance as reported by the CLI (`--format json`) and the API.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TrialBalanceReport {
    pub accounts: Vec<TrialBalanceRow>,
    /// One row per currency; `balance` is zero when the books balance.
    pub totals: Vec<TrialBalanceRow>,
    pub balanced: bool,
}

impl From<&TrialBalance> for TrialBalanceReport {
    fn from(tb: &TrialBalance) -> Self {
        TrialBalanceReport {
            accounts: tb
                .accounts
                .iter()
                .map(|a| TrialBalanceRow {
                    account: a.code.to_string(),
                    currency: a.currency.to_string(),
                    debit: amount(a.debits.into(), a.currency),
                    credit: amount(a.credits.into(), a.currency),
                    balance: amount(a.signed_balance(), a.currency),
                })
                .collect(),
            totals: tb
                .totals
                .iter()
                .map(|t| TrialBalanceRow {
                    account: format!("total {}", t.currency),
                    currency: t.currency.to_string(),
                    debit: amount(t.debits, t.currency),
                    credit: amount(t.credits, t.currency),
                    balance: amount(t.debits - t.credits, t.currency),
                })
                .collect(),
            balanced: tb.is_balanced(),
        }
    }
}

pub fn print_trial_balance(
    tb: &TrialBalance,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &TrialBalanceReport::from(tb))?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(["account", "currency", "debit", "credit", "balance"])?;
            for a in &tb.accounts {
                w.write_record([
                    a.code.as_str(),
                    a.currency.code(),
                    &amount(a.debits.into(), a.currency),
                    &amount(a.credits.into(), a.currency),
                    &amount(a.signed_balance(), a.currency),
                ])?;
            }
            w.flush()?;
        }
        Format::Table => {
            let mut rows: Vec<Vec<String>> = tb
                .accounts
                .iter()
                .map(|a| {
                    vec![
                        a.code.to_string(),
                        a.currency.to_string(),
                        amount(a.debits.into(), a.currency),
                        amount(a.credits.into(), a.currency),
                        amount(a.signed_balance(), a.currency),
                    ]
                })
                .collect();
            for t in &tb.totals {
                rows.push(vec![
                    format!("total {}", t.currency),
                    t.currency.to_string(),
                    amount(t.debits, t.currency),
                    amount(t.credits, t.currency),
                    amount(t.debits - t.credits, t.currency),
                ]);
            }
            write!(
                out,
                "{}",
                table(
                    &["account", "currency", "debit", "credit", "balance"],
                    &rows,
                    &[2, 3, 4]
                )
            )?;
            writeln!(
                out,
                "{}",
                if tb.is_balanced() {
                    "balanced: every currency nets to zero"
                } else {
                    "NOT BALANCED"
                }
            )?;
        }
    }
    Ok(())
}

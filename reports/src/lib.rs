//! Reports for auditors, with hashes anyone can check.
//!
//! Five kinds ([`Kind`]), each as CSV or JSON ([`Format`]):
//!
//! - [`budget`] — per programme, budget line, modality and region: budget, funded, committed,
//!   released, paid, failed, fees, remaining and variances, in the programme currency and in
//!   the reporting currency at the recorded rate;
//! - [`household`] — per household: entitlements, paid, in transit, failed and the balance
//!   owed from its ledger account, personal data masked or opened as the caller's role allows;
//! - [`trial_balance`] — every account of the ledger;
//! - [`journal`] — entries with their lines, all or one programme's;
//! - [`reconciliation`] — one reconciliation run of a provider statement.
//!
//! A report is **byte-deterministic**: the same parameters over the same database state give
//! the same bytes (rows in a fixed order, no production time inside, amounts as decimal
//! strings — never floats; the one rounding rule is in [`money`]). [`Reports::produce`]
//! records each file it hands out — kind, parameters, format, SHA-256, size, who and when —
//! with a `report.produce` audit event in the same transaction ([`store`]), and
//! [`Reports::verify`] tells, for any file, whether it is a report produced here, by whom and
//! when, and whether the audit trail around it is intact. A file changed by one byte is not.
//!
//! ```no_run
//! # async fn demo(registry: cva_registry::Registry, ctx: cva_ledger::audit::AuditContext)
//! # -> Result<(), cva_reports::ReportError> {
//! use cva_reports::{Format, Kind, Reports, Request, Verdict};
//! let reports = Reports::new(registry);
//! let request = Request::new(Kind::Budget).programme("MLI-MPCA-24");
//! let produced = reports.produce(&request, Format::Csv, &ctx).await?;
//! std::fs::write("budget.csv", &produced.bytes).ok();
//! eprintln!("sha256 {}", produced.record.sha256);
//! let check = reports.verify(&produced.bytes).await?;
//! assert_eq!(check.verdict, Verdict::Verified);
//! # Ok(()) }
//! ```
//!
//! Both backends (PostgreSQL, SQLite) run the same SQL through the ledger's
//! [`cva_ledger::read_pool`] and [`cva_ledger::write_tx`] macros. This crate checks no role:
//! the command line and the HTTP API decide who may read which report, and pass the
//! personal-data policy of the requester's role as [`Request::reveal`].

pub mod budget;
pub mod error;
pub mod household;
pub mod journal;
pub mod model;
pub mod money;
pub mod reconciliation;
pub mod render;
pub mod store;
pub mod trial_balance;

use chrono::Utc;
use cva_ledger::audit::AuditContext;
use cva_ledger::Ledger;
use cva_registry::Registry;

pub use error::{ReportError, Result};
pub use model::{Cell, Format, Kind, Parameters, Request, Table};
pub use reconciliation::RunRef;
pub use store::{Produced, ReportRecord, Verdict, Verification};

/// The report service over a registry (and its ledger). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reports {
    registry: Registry,
}

impl Reports {
    pub fn new(registry: Registry) -> Reports {
        Reports { registry }
    }

    pub fn ledger(&self) -> &Ledger {
        self.registry.ledger()
    }

    /// Checks `request` and fills its defaults (the budget report's `as_of`: today, UTC).
    pub fn resolve(&self, request: &Request) -> Result<Parameters> {
        request.resolve(Utc::now().date_naive())
    }

    /// The report's table, read from the database; nothing is recorded.
    pub async fn table(&self, params: &Parameters) -> Result<Table> {
        match params.kind {
            Kind::Budget => {
                let as_of = params
                    .as_of
                    .ok_or_else(|| ReportError::invalid("as_of", "is required"))?;
                budget::build(&self.registry, params.require_programme()?, as_of).await
            }
            Kind::Household => {
                let reveal = params
                    .reveal
                    .ok_or_else(|| ReportError::invalid("personal_data", "is required"))?;
                household::build(&self.registry, params.require_programme()?, reveal).await
            }
            Kind::TrialBalance => trial_balance::build(self.ledger()).await,
            Kind::Journal => journal::build(&self.registry, params.programme.as_deref()).await,
            Kind::Reconciliation => {
                let which = match (params.statement, params.run) {
                    (Some(s), None) => RunRef::Statement(s),
                    (None, Some(r)) => RunRef::Run(r),
                    _ => {
                        return Err(ReportError::invalid(
                            "statement",
                            "name either a statement or a run",
                        ))
                    }
                };
                reconciliation::build(self.ledger(), which).await
            }
        }
    }

    /// The report's bytes for resolved parameters; nothing is recorded.
    pub async fn render(&self, params: &Parameters, format: Format) -> Result<Vec<u8>> {
        let table = self.table(params).await?;
        render::render(params, &table, format)
    }

    /// Builds the report, renders it and records it with its audit event (see [`store`]).
    pub async fn produce(
        &self,
        request: &Request,
        format: Format,
        ctx: &AuditContext,
    ) -> Result<Produced> {
        let params = self.resolve(request)?;
        self.produce_resolved(&params, format, ctx).await
    }

    /// [`produce`](Self::produce) with parameters already resolved (a fixed `as_of`).
    pub async fn produce_resolved(
        &self,
        params: &Parameters,
        format: Format,
        ctx: &AuditContext,
    ) -> Result<Produced> {
        let bytes = self.render(params, format).await?;
        store::record(self.ledger(), params, format, bytes, ctx).await
    }

    /// Whether `bytes` are a report produced here (see [`store::verify`]).
    pub async fn verify(&self, bytes: &[u8]) -> Result<Verification> {
        store::verify(self.ledger(), bytes).await
    }

    /// The reports recorded with this SHA-256.
    pub async fn records(&self, sha256: &str) -> Result<Vec<ReportRecord>> {
        store::records_with_hash(self.ledger(), sha256).await
    }
}

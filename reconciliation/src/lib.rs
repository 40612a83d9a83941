//! Reconciliation of provider statements against payments and budgets.
//!
//! It imports **provider statements** (the CSV a mobile-money provider gives for a float
//! account, one row per movement), matches them against the payments, reconciles the float,
//! and keeps the exceptions queue (see the modules below).
//!
//! # Using it
//!
//! 1. Pick or load a [`ColumnMapping`]: [`ColumnMapping::simulator`] for the provider simulator,
//!    [`ColumnMapping::generic`] for the documented generic layout, or
//!    [`ColumnMapping::from_json`] for a provider's own mapping file (see [`mapping`]).
//! 2. Read the file all or nothing with [`parse_all`] (bytes) or [`parse_reader`] (a stream):
//!    either a [`ParsedStatement`] — every line, the SHA-256 of the raw bytes, the opening and
//!    closing float balances — or a [`StatementError`], whose
//!    [`Rejected`](StatementError::Rejected) variant lists every bad row with its row number,
//!    column and reason (the first [`statement::MAX_ROW_ERRORS`], and how many more).
//! 3. Before storing, look the hash up: the same bytes imported twice have the same
//!    [`ParsedStatement::sha256`] ([`content_sha256`] computes it without parsing).
//! 4. Or let [`Statements::import`] do 2 and 3 and store the statement, its lines and an
//!    audit event in one transaction (see [`store`]).
//!
//! ```
//! use cva_ledger::money::Currency;
//! use cva_reconciliation::{parse_all, ColumnMapping, StatementError, StatementStatus};
//!
//! let statement = "transaction_id,reference,msisdn,amount,currency,fee,status,completed_at,balance_after\n\
//!     SIMTX00000001,PL-1,22376123456,65000,XOF,500,completed,2024-03-01T10:22:33+00:00,99934500\n";
//! let xof = Currency::parse("XOF").unwrap();
//! let parsed = parse_all(statement.as_bytes(), &ColumnMapping::simulator(), xof).unwrap();
//! let line = &parsed.lines[0];
//! assert_eq!((line.row, line.amount_minor, line.fee_minor), (2, 65_000, 500));
//! assert_eq!(line.status, StatementStatus::Completed);
//! assert_eq!(parsed.opening_balance.unwrap().minor(), 100_000_000);
//!
//! let bad = statement.replace("65000", "65000 XOF");
//! match parse_all(bad.as_bytes(), &ColumnMapping::simulator(), xof) {
//!     Err(StatementError::Rejected { errors, more }) => {
//!         assert_eq!((errors[0].row, errors[0].column.as_str(), more), (2, "amount", 0));
//!     }
//!     other => panic!("{other:?}"),
//! }
//! ```
//!
//! Files too large to hold are read with [`StatementReader`], an iterator of
//! `Result<StatementLine, RowError>` in constant memory; `examples/statement_bench.rs` times
//! it (`cargo run --release -p cva-reconciliation --example statement_bench -- 1000000`).
//!
//! # Modules
//!
//! * [`mapping`]: column mappings as data (JSON), the built-ins and their validation.
//! * [`amount`]: amount syntax (`65 000`, `65.000,00`, `(20000)`…) to exact minor units.
//! * [`date`]: date syntax (`2024-03-01`, `01/03/2024 10:22`, RFC 3339…) to UTC.
//! * [`statement`]: the file format, row checks, row errors, the streaming reader and the
//!   all-or-nothing parse.
//! * [`store`]: imported statements in the database (tables `statements` and
//!   `statement_lines`), refused when already imported.
//! * [`matching`]: the pure matching engine (rules, categories) over in-memory data.
//! * [`run`]: a reconciliation run in the database ([`Reconciler::run`]): matching against the
//!   provider's payment lines, the outcomes the statement settles, the float reconciliation,
//!   the stored run, items and exceptions.
//! * [`packed`]: the plain matches of a run, stored packed (table `reconciliation_matches`).
//! * [`exceptions`]: the exceptions queue people work ([`Exceptions`]): assign, comment,
//!   resolve, adjusting entries under maker-checker.
//!
//! Money never goes through floating point: amounts are `i64` minor units of a
//! [`cva_ledger::money::Currency`].

pub mod amount;
pub mod date;
pub mod exceptions;
pub mod mapping;
pub mod matching;
pub mod packed;
mod pgcopy;
pub mod run;
mod source;
mod sqlitejson;
pub mod statement;
pub mod store;

pub use exceptions::{
    AdjustmentLine, AdjustmentStatus, AdjustmentView, ExceptionDetail, ExceptionError,
    ExceptionEvent, ExceptionFilter, ExceptionStatus, ExceptionView, Exceptions,
};
pub use mapping::{ColumnMapping, MappingError};
pub use matching::{
    reconcile, reconcile_with, Category, Item, MatchOptions, Payment, PaymentStatus,
    Reconciliation, Rule, Summary,
};
pub use run::{Reconciler, RunError, RunOptions, RunView};
pub use statement::{
    content_sha256, parse_all, parse_reader, ParsedStatement, RowError, StatementError,
    StatementLine, StatementReader, StatementStatus,
};
pub use store::{ImportError, ImportedStatement, Statements, StoredLine};

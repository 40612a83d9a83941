//! Households of a programme: the enrolment record ([`model`]), bulk import from
//! KoboToolbox/ODK CSV exports ([`import`]), phone numbers normalised to E.164 with their operator
//! ([`msisdn`]), personal data sealed at rest and searchable by keyed hash ([`pii`]), masked for
//! roles that do not need it ([`mask`]), duplicate detection ([`dedup`]) and deterministic
//! fixture data ([`fixtures`]).
//!
//! Everything here is pure (no database); storage lives in the `cva` crate's household store.

pub mod dedup;
pub mod fixtures;
pub mod import;
pub mod mask;
pub mod model;
pub mod msisdn;
pub mod pii;

//! Payment-provider integrations of the CVA ledger: GSMA Mobile Money API v1.2 wire types ([`gsma`]) and a deterministic disbursement simulator ([`sim`]) to test against, and request/response validation against the spec ([`spec`]).

pub mod faults;
pub mod gsma;
pub mod sim;
pub mod spec;

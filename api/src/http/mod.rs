//! The HTTP API: `startup` builds the router and serves it; `problem` is the one error type
//! (RFC 9457 problem+json); `auth` authenticates requests and checks roles; the route modules
//! are named after what they serve.

pub mod audit;
pub mod auth;
pub mod batches;
pub mod exceptions;
pub mod health;
pub mod ledger;
pub mod openapi;
pub mod problem;
pub mod registry;
pub mod reports;
pub mod sessions;
pub mod startup;
pub mod statements;
pub mod users;

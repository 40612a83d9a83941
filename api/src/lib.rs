//! The `cva` application: command line, demo and HTTP API over the ledger. `main.rs` only
//! parses arguments and reports errors; everything else lives here so tests can drive it.

pub mod cli;
pub mod commands;
pub mod config;
pub mod demo;
pub mod http;
pub mod output;
pub mod payments;

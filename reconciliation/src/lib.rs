//! Reconciliation of provider statements against payments and budgets.
//!
//! Empty for now: statement import, matching and the exception queue arrive with the
//! reconciliation issue. The crate exists so that the workspace map in the README is the real one.

//! (being written) Phone numbers in E.164.

use serde::{Deserialize, Serialize};

/// A phone number in E.164 form, e.g. `+22376123456`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Msisdn(pub(crate) String);

impl Msisdn {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

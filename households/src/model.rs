//! The enrolment record of one household, as captured in the field (one Kobo/ODK submission)
//! and validated. Personal fields (head's name, phone number, ID numbers) are plaintext only in
//! memory; the store seals them with [`crate::pii`] before writing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::msisdn::Msisdn;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Female,
    Male,
}

impl Sex {
    pub fn as_str(self) -> &'static str {
        match self {
            Sex::Female => "female",
            Sex::Male => "male",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Displacement {
    /// Internally displaced person.
    Idp,
    /// Host community.
    Host,
    Returnee,
}

impl Displacement {
    pub fn as_str(self) -> &'static str {
        match self {
            Displacement::Idp => "idp",
            Displacement::Host => "host",
            Displacement::Returnee => "returnee",
        }
    }
}

/// An administrative p-code (OCHA COD style: country ISO2 then digits, e.g. `ML06`, `ML0601`,
/// `ML060101`): 2 upper-case letters and 2–12 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PCode(String);

impl PCode {
    pub fn parse(s: &str) -> Result<PCode, &'static str> {
        let s = s.trim();
        let b = s.as_bytes();
        let ok = (4..=14).contains(&b.len())
            && b[..2].iter().all(u8::is_ascii_uppercase)
            && b[2..].iter().all(u8::is_ascii_digit);
        if ok {
            Ok(PCode(s.to_owned()))
        } else {
            Err("expected a p-code: 2 upper-case letters then 2 to 12 digits, e.g. ML0601")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` lies inside `parent` (`ML060101` is inside `ML0601` and `ML06`).
    pub fn within(&self, parent: &PCode) -> bool {
        self.0.len() > parent.0.len() && self.0.starts_with(&parent.0)
    }
}

/// One household as enrolled. `submission_id` is the form's `_uuid`: importing the same
/// submission twice must not create a second household.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HouseholdRecord {
    pub submission_id: String,
    pub submitted_at: DateTime<Utc>,
    pub enumerator: String,
    pub consent: bool,
    pub head_name: String,
    pub head_sex: Sex,
    pub head_birth_year: i32,
    pub size: u16,
    pub displacement: Displacement,
    pub region: PCode,
    pub cercle: PCode,
    pub commune: PCode,
    pub msisdn: Option<Msisdn>,
    /// The operator serving `msisdn`, from the operator prefix table.
    pub operator: Option<String>,
    pub national_id: Option<String>,
    /// A biometric registration reference (BRaVE-style), not biometric data itself.
    pub biometric_ref: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcodes() {
        let commune = PCode::parse("ML060101").unwrap();
        let cercle = PCode::parse("ML0601").unwrap();
        assert!(commune.within(&cercle));
        assert!(!cercle.within(&commune));
        assert!(PCode::parse("ml06").is_err());
        assert!(PCode::parse("ML").is_err());
        assert!(PCode::parse("ML06A").is_err());
    }
}

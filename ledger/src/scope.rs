//! Programme scoping of the books: which accounts a user limited to some programmes may see or
//! post to.
//!
//! An account belongs to a programme when its code says so: the segment after one of
//! [`PROGRAMME_PREFIXES`] is the programme code (`funds:P1:mpca`,
//! `expense:transfers:P1:mpca`, `liabilities:entitlements:P1:HH-0001`). Other accounts (the bank,
//! provider floats and in-transit accounts, fees) are shared by all programmes; a scoped user sees
//! their balances but not the whole-book views (trial balance, journal), which
//! [`Scope::is_all`] guards.
//!
//! Lists are filtered in the query ([`Scope::sql`]), so a page of results never carries rows
//! outside the scope; single-object reads check the object with [`Scope::admits`] in the ledger's
//! service functions (`Ledger::*_in`), and answer "not found" for objects outside it so their
//! existence does not leak.

use crate::account::AccountCode;
use crate::entry::{NewEntry, PostedEntry};

/// Prefixes after which an account code names its programme.
pub const PROGRAMME_PREFIXES: &[&str] =
    &["funds:", "expense:transfers:", "liabilities:entitlements:"];

/// What a caller may see of the books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every programme (an unrestricted user, the CLI).
    All,
    /// Only these programmes, plus shared accounts.
    Programmes(Vec<String>),
}

impl Scope {
    /// The scope of a user limited to `programmes`; an empty list means unrestricted.
    pub fn of(programmes: &[String]) -> Scope {
        if programmes.is_empty() {
            Scope::All
        } else {
            Scope::Programmes(programmes.to_vec())
        }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }

    /// The programme an account belongs to, if any.
    pub fn programme_of(code: &AccountCode) -> Option<&str> {
        let c = code.as_str();
        PROGRAMME_PREFIXES
            .iter()
            .find_map(|p| c.strip_prefix(p))
            .and_then(|rest| rest.split(':').next())
            .filter(|p| !p.is_empty())
    }

    /// Whether the caller may see or post to `code`.
    pub fn admits(&self, code: &AccountCode) -> bool {
        match self {
            Scope::All => true,
            Scope::Programmes(ps) => match Scope::programme_of(code) {
                None => true,
                Some(p) => ps.iter().any(|q| q == p),
            },
        }
    }

    /// The first account of `entry` outside the scope, if any.
    pub fn first_outside<'a>(&self, entry: &'a NewEntry) -> Option<&'a AccountCode> {
        entry
            .lines
            .iter()
            .map(|l| &l.account)
            .find(|a| !self.admits(a))
    }

    /// Whether every line of a posted entry is inside the scope.
    pub fn admits_entry(&self, entry: &PostedEntry) -> bool {
        entry.lines.iter().all(|l| self.admits(&l.account))
    }

    /// A condition on the column `code` with its parameters, numbered from `first` (`$n` on
    /// PostgreSQL, `?n` on SQLite), admitting exactly what [`Scope::admits`] admits.
    pub fn sql(&self, postgres: bool, first: usize) -> (String, Vec<String>) {
        let Scope::Programmes(ps) = self else {
            return ("TRUE".into(), Vec::new());
        };
        let mut params = Vec::new();
        let mut prefix = |p: String| {
            params.push(p);
            let n = first + params.len() - 1;
            if postgres {
                format!("starts_with(code, ${n})")
            } else {
                // `LIKE` would treat `_` in a code as a wildcard; compare the prefix exactly.
                format!("substr(code, 1, length(?{n})) = ?{n}")
            }
        };
        let shared: Vec<String> = PROGRAMME_PREFIXES
            .iter()
            .map(|p| prefix((*p).to_owned()))
            .collect();
        let mut own = Vec::new();
        for prog in ps {
            for p in PROGRAMME_PREFIXES {
                own.push(prefix(format!("{p}{prog}:")));
            }
        }
        // The programme's own two-segment accounts (`funds:P1`): equal to the prefix minus `:`.
        let mut exact = Vec::new();
        for prog in ps {
            for p in PROGRAMME_PREFIXES {
                params.push(format!("{p}{prog}"));
                let n = first + params.len() - 1;
                exact.push(if postgres {
                    format!("code = ${n}")
                } else {
                    format!("code = ?{n}")
                });
            }
        }
        own.extend(exact);
        let mut clause = format!("(NOT ({})", shared.join(" OR "));
        for o in own {
            clause.push_str(" OR ");
            clause.push_str(&o);
        }
        clause.push(')');
        (clause, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> AccountCode {
        AccountCode::parse(s).unwrap()
    }

    #[test]
    fn programme_accounts_and_shared_ones() {
        assert_eq!(Scope::programme_of(&code("funds:P1:mpca")), Some("P1"));
        assert_eq!(
            Scope::programme_of(&code("liabilities:entitlements:P_2:HH-1")),
            Some("P_2")
        );
        assert_eq!(Scope::programme_of(&code("assets:float:orange")), None);
        assert_eq!(Scope::programme_of(&code("expense:fees:orange")), None);
        let s = Scope::of(&["P1".into()]);
        assert!(s.admits(&code("funds:P1:mpca")));
        assert!(s.admits(&code("assets:bank")));
        assert!(!s.admits(&code("funds:P2:mpca")));
        assert!(
            !s.admits(&code("funds:P10:mpca")),
            "a prefix of another code"
        );
        assert!(Scope::of(&[]).admits(&code("funds:P2:mpca")));
    }
}

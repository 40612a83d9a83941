//! Maker-checker: an action that needs a second person records who prepared it and who acted
//! at each step; nobody may act twice on the same object, and the preparer may not check.
//! Used for verifying households, approving / authorising / releasing batches and resolving
//! reconciliation exceptions.

use crate::{AccessError, UserId};

/// Who has touched an object so far. `A` identifies a person: a [`UserId`], or the audit
/// trail's actor name where changes also come from the command line (`cli:alice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FourEyes<A = UserId> {
    pub prepared_by: A,
    /// (step, person) in order.
    pub acted: Vec<(String, A)>,
}

impl<A: PartialEq> FourEyes<A> {
    pub fn new(prepared_by: A) -> Self {
        FourEyes {
            prepared_by,
            acted: Vec::new(),
        }
    }

    /// Refuses `actor` for `step` if they prepared the object or already acted on it.
    pub fn check(&self, step: &str, actor: &A) -> Result<(), AccessError> {
        if *actor == self.prepared_by {
            return Err(AccessError::SamePerson(format!(
                "{step}: the person who prepared this cannot also {step} it"
            )));
        }
        if let Some((prev, _)) = self.acted.iter().find(|(_, u)| u == actor) {
            return Err(AccessError::SamePerson(format!(
                "{step}: you already acted on this ({prev}); another person must {step} it"
            )));
        }
        Ok(())
    }

    /// Checks and records the step.
    pub fn act(&mut self, step: &str, actor: A) -> Result<(), AccessError> {
        self.check(step, &actor)?;
        self.acted.push((step.to_owned(), actor));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preparer_and_repeat_actors_are_refused() {
        let mut f = FourEyes::new(UserId(1));
        assert!(f.act("approve", UserId(1)).is_err());
        f.act("approve", UserId(2)).unwrap();
        assert!(f.act("authorise", UserId(2)).is_err());
        f.act("authorise", UserId(3)).unwrap();
        assert_eq!(f.acted.len(), 2);
        let by_name = FourEyes::new("cli:alice".to_owned());
        assert!(by_name.check("verify", &"cli:alice".to_owned()).is_err());
        assert!(by_name.check("verify", &"bob".to_owned()).is_ok());
    }
}

//! Payment batches and provider floats as the command line and the HTTP API expose them: the
//! one role matrix both check, the server's payments state (the configured [`Batches`], the send
//! options, the sends running in the background), and the JSON shapes both print.
//!
//! Role matrix (MISSION.md; `admin` manages but never moves money):
//!
//! | action | roles |
//! |---|---|
//! | read batches, lines, attempts, provider balances | every role (`admin`, `programme_officer`, `finance_officer`, `auditor`) |
//! | create, submit, cancel, reissue | `programme_officer` |
//! | approve, authorise, release, send, fund a float | `finance_officer` |
//! | import a provider statement, reconcile it | `finance_officer` |
//! | read the exceptions queue (exceptions, history, adjustments) | every role |
//! | assign, comment, resolve an exception; propose, approve, reject an adjustment | `finance_officer` (an adjustment is decided by another person than its proposer) |
//!
//! The maker-checker rules (the preparer never signs; nobody signs a batch twice) are the
//! batches crate's, enforced there and by the database whatever role a person holds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use cva_access::{Role, User};
use cva_batches::provider::AdapterKind;
use cva_batches::SendOptions;
use cva_batches::{BatchView, Batches, Filters};
use cva_ledger::audit::AuditContext;
use cva_programmes::rules::Modality;
use cva_registry::RegistryError;
use serde::Serialize;

/// What batch commands and routes say when the server or CLI has no payments configuration.
pub const NOT_CONFIGURED: &str = "no payment providers configured: set CVA_PAYMENTS_CONFIG";

/// Something a caller does with batches or floats; [`Action::roles`] is the role matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Read,
    Create,
    Submit,
    Approve,
    Authorise,
    Release,
    Send,
    Cancel,
    Reissue,
    FundFloat,
    ImportStatement,
    Reconcile,
    /// Reading the exceptions queue.
    ReadExceptions,
    /// Assigning, commenting on or resolving an exception.
    WorkException,
    ProposeAdjustment,
    /// Approving or rejecting an adjustment.
    DecideAdjustment,
}

/// Preparing a batch: programme staff.
const PREPARERS: &[Role] = &[Role::ProgrammeOfficer];
/// Signing off, sending and funding: finance.
const SIGNERS: &[Role] = &[Role::FinanceOfficer];

impl Action {
    /// The roles that may take this action (any one of them).
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::Read | Action::ReadExceptions => crate::http::auth::READERS,
            Action::Create | Action::Submit | Action::Cancel | Action::Reissue => PREPARERS,
            Action::Approve
            | Action::Authorise
            | Action::Release
            | Action::Send
            | Action::FundFloat
            | Action::ImportStatement
            | Action::Reconcile
            | Action::WorkException
            | Action::ProposeAdjustment
            | Action::DecideAdjustment => SIGNERS,
        }
    }

    /// What the action is, for messages: `approving a batch`.
    pub fn describe(self) -> &'static str {
        match self {
            Action::Read => "reading batches and floats",
            Action::Create => "creating batches",
            Action::Submit => "submitting a batch",
            Action::Approve => "approving a batch",
            Action::Authorise => "authorising a batch",
            Action::Release => "releasing a batch",
            Action::Send => "sending a batch",
            Action::Cancel => "cancelling a batch",
            Action::Reissue => "re-issuing a batch",
            Action::FundFloat => "funding a provider float",
            Action::ImportStatement => "importing a provider statement",
            Action::Reconcile => "reconciling a provider statement",
            Action::ReadExceptions => "reading the exceptions queue",
            Action::WorkException => "working an exception",
            Action::ProposeAdjustment => "proposing an adjusting entry",
            Action::DecideAdjustment => "approving or rejecting an adjusting entry",
        }
    }

    /// The role under which `user` takes this action: the first of [`Action::roles`] the user
    /// holds (recorded in the audit trail, so an admin who is also a finance officer approves
    /// as `finance_officer`). `None` when the user holds none of them.
    pub fn acting_role(self, user: &User) -> Option<Role> {
        self.roles()
            .iter()
            .copied()
            .find(|r| user.roles.contains(r))
    }

    /// The refusal for a user who holds none of the roles.
    pub fn refusal(self) -> String {
        let names: Vec<&str> = self.roles().iter().map(Role::as_str).collect();
        format!(
            "{} needs one of the roles: {}",
            self.describe(),
            names.join(", ")
        )
    }

    /// The audit context of `user` taking this action, or the refusal.
    pub fn context(self, user: &User, request_id: String) -> Result<AuditContext, String> {
        let role = self.acting_role(user).ok_or_else(|| self.refusal())?;
        Ok(AuditContext {
            actor_id: Some(user.id.0),
            actor: user.username.as_str().to_owned(),
            role: role.as_str().to_owned(),
            request_id,
        })
    }
}

/// Which entitlements a new batch takes, as the CLI flags and the API body give them.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBatches {
    /// Programme code.
    pub programme: String,
    /// Only entitlements of this modality: mpca, cash_for_work or shelter.
    pub modality: Option<String>,
    /// Only this cycle, e.g. `2024-03`.
    pub cycle: Option<String>,
    /// Only households of this region (p-code, e.g. `ML05`).
    pub region: Option<String>,
    /// Only this provider's households (a configured provider name).
    pub provider: Option<String>,
    /// Most lines per batch: 1 to 100,000 (default 10,000).
    #[schema(minimum = 1, maximum = 100000)]
    pub max_lines: Option<usize>,
}

impl NewBatches {
    /// The batches crate's filters; a modality that does not exist is refused naming the field.
    pub fn filters(self) -> Result<Filters, RegistryError> {
        let modality = match self.modality.as_deref().map(str::trim) {
            Some(m) => Some(
                Modality::parse(m)
                    .map_err(|e| RegistryError::invalid("modality", e.to_string()))?
                    .as_str()
                    .to_owned(),
            ),
            None => None,
        };
        let trimmed = |v: Option<String>| v.map(|s| s.trim().to_owned());
        Ok(Filters {
            programme: self.programme.trim().to_owned(),
            modality,
            cycle: trimmed(self.cycle),
            region: trimmed(self.region),
            provider: trimmed(self.provider),
            max_lines: self.max_lines,
        })
    }
}

/// Refused unless the adapter of the batch's provider sends over the API, and the batch was
/// released (or is being sent, or has lines left unknown by an earlier send): the checks
/// `Batches::send` makes, made before a send starts in the background.
pub fn check_sendable(batches: &Batches, b: &BatchView) -> Result<(), RegistryError> {
    if !matches!(
        b.status.as_str(),
        "released" | "sending" | "completed" | "partially_completed" | "failed"
    ) {
        return Err(RegistryError::Conflict(format!(
            "batch {} is {}; only a released batch is sent",
            b.id, b.status
        )));
    }
    match batches.config().provider(&b.provider) {
        None => Err(RegistryError::invalid(
            "provider",
            format!(
                "batch {} names provider `{}`, which is not configured",
                b.id, b.provider
            ),
        )),
        Some(p) if p.adapter != AdapterKind::GsmaMmapi => Err(RegistryError::Conflict(format!(
            "provider `{}` takes files, not API requests: nothing was sent",
            p.name
        ))),
        Some(_) => Ok(()),
    }
}

// ---- server state ----------------------------------------------------------------------------

/// The payments part of the server's state. Without a configuration every batch route answers
/// 503 with [`NOT_CONFIGURED`]. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Payments {
    batches: Option<Batches>,
    send_options: Arc<SendOptions>,
    sends: Arc<Mutex<Sends>>,
}

/// Sends running in this process, and the last error of each batch's background send.
#[derive(Debug, Default)]
struct Sends {
    running: HashSet<i64>,
    last_error: HashMap<i64, String>,
}

impl Payments {
    pub fn new(batches: Batches) -> Payments {
        Payments {
            batches: Some(batches),
            ..Payments::default()
        }
    }

    /// The options of background sends (default: [`SendOptions::default`]).
    pub fn with_send_options(mut self, options: SendOptions) -> Payments {
        self.send_options = Arc::new(options);
        self
    }

    /// The batch services, or [`NOT_CONFIGURED`].
    pub fn batches(&self) -> Result<&Batches, &'static str> {
        self.batches.as_ref().ok_or(NOT_CONFIGURED)
    }

    pub fn send_options(&self) -> Arc<SendOptions> {
        Arc::clone(&self.send_options)
    }

    fn sends(&self) -> MutexGuard<'_, Sends> {
        // A panic while holding this lock leaves plain sets behind: still usable.
        self.sends.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a send of batch `id` as running, or `None` when one already runs in this process.
    /// The mark goes when the returned guard is finished or dropped (even by a panic).
    pub fn start_send(&self, id: i64) -> Option<RunningSend> {
        let mut s = self.sends();
        if !s.running.insert(id) {
            return None;
        }
        s.last_error.remove(&id);
        Some(RunningSend {
            id,
            sends: Arc::clone(&self.sends),
        })
    }

    /// Whether a send of batch `id` runs in this process, and the last background send's error.
    pub fn send_state(&self, id: i64) -> SendState {
        let s = self.sends();
        SendState {
            running: s.running.contains(&id),
            last_error: s.last_error.get(&id).cloned(),
        }
    }
}

/// A send in progress; see [`Payments::start_send`].
#[derive(Debug)]
pub struct RunningSend {
    id: i64,
    sends: Arc<Mutex<Sends>>,
}

impl RunningSend {
    /// Ends the send, keeping its error (if any) for [`Payments::send_state`].
    pub fn finish(self, error: Option<String>) {
        let mut s = self.sends.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = error {
            s.last_error.insert(self.id, e);
        }
        // `running` is cleared by Drop.
    }
}

impl Drop for RunningSend {
    fn drop(&mut self) {
        let mut s = self.sends.lock().unwrap_or_else(|e| e.into_inner());
        s.running.remove(&self.id);
    }
}

// ---- what the CLI and the API print ----------------------------------------------------------

// The batches crate's views, under the names the API documents.
pub use cva_batches::{
    Applied, AttemptView as Attempt, BatchView as Batch, CreationReport as Creation,
    FloatView as Float, LineView as Line, SendReport as SendResult, Signoff,
};

/// Lines of a batch by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LineCounts {
    /// Pending (not sent yet) or in flight (sent, no outcome yet).
    pub open: i64,
    pub completed: i64,
    pub failed: i64,
    /// The provider could not say: counted, never retried until someone sends again.
    pub unknown: i64,
    pub cancelled: i64,
}

impl LineCounts {
    /// From `Batches::line_counts` (completed, failed, unknown, open) and the batch's size.
    pub fn new(line_count: i64, counts: (i64, i64, i64, i64)) -> LineCounts {
        let (completed, failed, unknown, open) = counts;
        LineCounts {
            open,
            completed,
            failed,
            unknown,
            cancelled: (line_count - completed - failed - unknown - open).max(0),
        }
    }
}

/// The background send of a batch, as this server process knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SendState {
    /// A send of this batch runs now in this server.
    pub running: bool,
    /// Why the last background send stopped early, if it did (the batch and its attempts show
    /// what was done; sending again resumes).
    pub last_error: Option<String>,
}

/// A batch with its lines by status and its provider attempts.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatchDetail {
    pub batch: Batch,
    pub lines: LineCounts,
    pub attempts: Vec<Attempt>,
    /// Only from the HTTP API: the background send in this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send: Option<SendState>,
}

impl BatchDetail {
    /// Reads a batch, its line counts and attempts.
    pub async fn read(batches: &Batches, id: i64) -> cva_batches::Result<BatchDetail> {
        let batch = batches.batch(id).await?;
        let counts = batches.line_counts(id).await?;
        let attempts = batches.attempts(id).await?;
        Ok(BatchDetail {
            lines: LineCounts::new(batch.line_count, counts),
            batch,
            attempts: attempts.into_iter().collect(),
            send: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cva_access::{UserId, Username};

    fn user(roles: &[Role]) -> User {
        User {
            id: UserId(7),
            username: Username::parse("someone").unwrap_or_else(|e| panic!("{e}")),
            roles: roles.to_vec(),
            programmes: Vec::new(),
            disabled: false,
        }
    }

    #[test]
    fn the_role_matrix() {
        use Action::*;
        let po = user(&[Role::ProgrammeOfficer]);
        let fo = user(&[Role::FinanceOfficer]);
        let admin = user(&[Role::Admin]);
        let auditor = user(&[Role::Auditor]);
        for a in [Create, Submit, Cancel, Reissue] {
            assert!(a.acting_role(&po).is_some(), "{a:?}");
            assert!(a.acting_role(&fo).is_none(), "{a:?}");
            assert!(a.acting_role(&admin).is_none(), "{a:?}");
        }
        for a in [
            Approve,
            Authorise,
            Release,
            Send,
            FundFloat,
            ImportStatement,
            Reconcile,
            WorkException,
            ProposeAdjustment,
            DecideAdjustment,
        ] {
            assert!(a.acting_role(&fo).is_some(), "{a:?}");
            assert!(a.acting_role(&po).is_none(), "{a:?}");
            assert!(
                a.acting_role(&admin).is_none(),
                "admin never moves money: {a:?}"
            );
            assert!(a.acting_role(&auditor).is_none(), "{a:?}");
        }
        for u in [&po, &fo, &admin, &auditor] {
            assert!(Read.acting_role(u).is_some());
            assert!(ReadExceptions.acting_role(u).is_some());
        }
        // Recorded under the role that allows the step, not the most powerful one held.
        let both = user(&[Role::Admin, Role::FinanceOfficer]);
        let ctx = Approve
            .context(&both, "r".into())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (ctx.role.as_str(), ctx.actor_id),
            ("finance_officer", Some(7))
        );
        assert!(Approve
            .context(&admin, "r".into())
            .is_err_and(|e| e.contains("finance_officer")));
    }

    #[test]
    fn one_send_per_batch_at_a_time() {
        let p = Payments::default();
        assert!(p.batches().is_err_and(|e| e == NOT_CONFIGURED));
        let first = p.start_send(1);
        assert!(first.is_some());
        assert!(p.start_send(1).is_none());
        assert!(p.start_send(2).is_some(), "another batch may send");
        assert!(p.send_state(1).running);
        if let Some(s) = first {
            s.finish(Some("provider: down".into()));
        }
        let st = p.send_state(1);
        assert!(!st.running);
        assert_eq!(st.last_error.as_deref(), Some("provider: down"));
        let again = p.start_send(1);
        assert!(again.is_some());
        assert_eq!(
            p.send_state(1).last_error,
            None,
            "a new send clears the error"
        );
    }
}

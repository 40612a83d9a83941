//! The posting plan: given a batch of entries, the accounts they touch (locked, with their
//! current totals) and the idempotency keys already used, decide entry by entry what happens.
//!
//! This is pure code shared by both storage backends, so the rules (idempotent replay,
//! conflicts, currency match, balance rules applied entry after entry in batch order) are the
//! same everywhere. The database re-checks the structural invariants on its own.

use std::collections::{HashMap, HashSet};

use crate::account::{normal_balance, AccountCode, AccountSpec, BalanceRule, OpeningPolicy, Side};
use crate::entry::{EntryId, IdempotencyKey, NewEntry};
use crate::error::LedgerError;

/// What posting an entry did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posting {
    /// Newly written.
    Posted(EntryId),
    /// The same key and content were posted before: this is the original entry.
    Replayed(EntryId),
}

impl Posting {
    pub fn id(&self) -> EntryId {
        match self {
            Posting::Posted(id) | Posting::Replayed(id) => *id,
        }
    }
}

/// How a batch treats a refused entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchMode {
    /// All or nothing: the first refused entry refuses the whole batch (`post_many`).
    Atomic,
    /// Each entry stands alone: refused entries are reported, the rest are written
    /// (group commit of concurrent single posts).
    Independent,
}

/// An account as the planner sees it: `id` is `None` for an account that will be opened on
/// first use if an accepted entry needs it.
#[derive(Debug, Clone)]
pub struct AccountState {
    pub id: Option<i64>,
    pub spec: AccountSpec,
    pub debits: i64,
    pub credits: i64,
}

/// The accepted entries, in batch order, with their new ids.
#[derive(Debug)]
pub struct Plan {
    pub outcomes: Vec<Result<Posting, LedgerError>>,
    /// (index into the batch, id) of each entry to insert.
    pub inserts: Vec<(usize, EntryId)>,
    /// Codes of accounts to open because an accepted entry uses them.
    pub to_open: Vec<AccountCode>,
}

/// Inputs the store has read under lock.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Keys already in the journal: their entry and content digest.
    pub existing_keys: HashMap<IdempotencyKey, (EntryId, [u8; 32])>,
    /// Entries (among those the batch reverses) that already have a reversal.
    pub already_reversed: HashMap<EntryId, EntryId>,
    pub accounts: HashMap<AccountCode, AccountState>,
}

pub fn plan(
    entries: &[NewEntry],
    digests: &[[u8; 32]],
    snapshot: &mut Snapshot,
    policy: &OpeningPolicy,
    mode: BatchMode,
) -> Result<Plan, LedgerError> {
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut inserts = Vec::with_capacity(entries.len());
    let mut batch_keys: HashMap<&IdempotencyKey, (EntryId, [u8; 32])> = HashMap::new();
    let mut reversed_here: HashMap<EntryId, EntryId> = HashMap::new();
    let mut used: HashSet<AccountCode> = HashSet::new();

    for (index, (entry, digest)) in entries.iter().zip(digests).enumerate() {
        let key = &entry.idempotency_key;
        let previous = snapshot
            .existing_keys
            .get(key)
            .or_else(|| batch_keys.get(key))
            .copied();
        let outcome = match previous {
            Some((id, d)) if d == *digest => Ok(Posting::Replayed(id)),
            Some((id, _)) => Err(LedgerError::IdempotencyConflict {
                key: key.clone(),
                existing: id,
            }),
            None => apply(entry, snapshot, policy, &reversed_here).map(|()| {
                let id = EntryId::new();
                batch_keys.insert(key, (id, *digest));
                if let Some(r) = entry.reverses {
                    reversed_here.insert(r, id);
                }
                for l in &entry.lines {
                    used.insert(l.account.clone());
                }
                inserts.push((index, id));
                Posting::Posted(id)
            }),
        };
        match (mode, outcome) {
            (BatchMode::Atomic, Err(e)) => {
                return Err(LedgerError::BatchRejected {
                    index,
                    source: Box::new(e),
                })
            }
            (_, o) => outcomes.push(o),
        }
    }
    let mut to_open: Vec<AccountCode> = used
        .into_iter()
        .filter(|c| snapshot.accounts.get(c).is_some_and(|a| a.id.is_none()))
        .collect();
    to_open.sort();
    Ok(Plan {
        outcomes,
        inserts,
        to_open,
    })
}

/// Applies one entry to the account states, or leaves them untouched and says why not.
fn apply(
    entry: &NewEntry,
    snapshot: &mut Snapshot,
    policy: &OpeningPolicy,
    reversed_here: &HashMap<EntryId, EntryId>,
) -> Result<(), LedgerError> {
    entry.validate_lines()?;
    if let Some(target) = entry.reverses {
        if let Some(&reversal) = snapshot
            .already_reversed
            .get(&target)
            .or_else(|| reversed_here.get(&target))
        {
            return Err(LedgerError::AlreadyReversed {
                entry: target,
                reversal,
            });
        }
    }
    // Net effect per account, checked against currency and overflow before anything changes.
    // Accounts this entry would open stay local until the entry is accepted, so that a refused
    // entry leaves no trace even in the plan (its currency must not bind a later entry).
    let mut fresh: Vec<AccountState> = Vec::new();
    let mut deltas: Vec<(&AccountCode, i64, i64)> = Vec::with_capacity(entry.lines.len());
    for l in &entry.lines {
        let currency = match snapshot.accounts.get(&l.account) {
            Some(s) => s.spec.currency,
            None => match fresh.iter().find(|s| s.spec.code == l.account) {
                Some(s) => s.spec.currency,
                None => {
                    let spec = policy.spec_for(&l.account, l.amount.currency())?;
                    let currency = spec.currency;
                    fresh.push(AccountState {
                        id: None,
                        spec,
                        debits: 0,
                        credits: 0,
                    });
                    currency
                }
            },
        };
        if currency != l.amount.currency() {
            return Err(LedgerError::CurrencyMismatch {
                account: l.account.to_string(),
                account_currency: currency,
                line_currency: l.amount.currency(),
            });
        }
        let (d, c) = match l.side {
            Side::Debit => (l.amount.minor(), 0),
            Side::Credit => (0, l.amount.minor()),
        };
        match deltas.iter_mut().find(|(code, _, _)| *code == &l.account) {
            Some(x) => {
                x.1 = x.1.checked_add(d).ok_or_else(|| overflow(&l.account))?;
                x.2 = x.2.checked_add(c).ok_or_else(|| overflow(&l.account))?;
            }
            None => deltas.push((&l.account, d, c)),
        }
    }
    let mut after = Vec::with_capacity(deltas.len());
    for (code, d, c) in &deltas {
        let s = match snapshot.accounts.get(*code) {
            Some(s) => s,
            None => fresh
                .iter()
                .find(|s| &s.spec.code == *code)
                .ok_or_else(|| {
                    LedgerError::Corrupt(format!("account {code} vanished from the plan"))
                })?,
        };
        let debits = s.debits.checked_add(*d).ok_or_else(|| overflow(code))?;
        let credits = s.credits.checked_add(*c).ok_or_else(|| overflow(code))?;
        if s.spec.rule == BalanceRule::MustNotGoNegative {
            let bal = normal_balance(s.spec.account_type, debits, credits);
            if bal < 0 {
                return Err(LedgerError::insufficient(
                    code.as_str(),
                    bal,
                    s.spec.currency,
                ));
            }
        }
        after.push((*code, debits, credits));
    }
    for s in fresh {
        snapshot.accounts.insert(s.spec.code.clone(), s);
    }
    for (code, debits, credits) in after {
        if let Some(s) = snapshot.accounts.get_mut(code) {
            s.debits = debits;
            s.credits = credits;
        }
    }
    Ok(())
}

fn overflow(code: &AccountCode) -> LedgerError {
    LedgerError::Overflow {
        account: code.to_string(),
    }
}

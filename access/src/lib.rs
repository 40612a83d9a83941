//! Who may do what. Users with roles and programme scopes, argon2id passwords, server-side
//! sessions behind short-lived JWT access tokens, login throttling, and the maker-checker rule.
//!
//! The HTTP server (crate `cva`) authenticates with [`AccessStore::login`], issues a token with
//! [`TokenKeys::issue`], and on every request decodes it and checks the session with
//! [`AccessStore::active_session`], so that logout or disabling a user takes effect at once.

pub mod error;
pub mod maker_checker;
pub mod password;
pub mod role;
pub mod session_cache;
pub mod store;
pub mod throttle;
pub mod token;

pub use error::AccessError;
pub use role::Role;
pub use store::{AccessStore, NewUser, Session, User, UserId, Username};
pub use token::{Claims, TokenKeys};

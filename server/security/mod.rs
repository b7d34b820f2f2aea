//! Who may call what, and the record of what they did: API keys with
//! scopes and namespace prefixes, per-key limits, and the audit log.
//!
//! Nothing here knows gRPC. `api::guard` reads the key a call presents,
//! asks the [`KeyRing`] who it belongs to, checks the [`Scope`] the method
//! needs and the key's [`KeyLimits`], and writes an [`AuditLog`] line when
//! the call ends; handlers check the namespace or collection a call names
//! against the [`Caller`].
//!
//! Keys live in a file that holds only their SHA-256 (`agentd keys create`
//! appends one and prints the key once); the server re-reads it when it
//! changes, so keys are added and revoked without a restart.
//!
//! - [`keys`]: the keys file, new keys, hashing.
//! - [`keyring`]: the keys in force, looked up in constant time, reloaded.
//! - [`limits`]: per-key request rate, concurrent streams, model tokens.
//! - [`caller`]: the key behind one call and what it may touch.
//! - [`audit`]: one JSON line per write, admin call and refusal.

mod audit;
mod caller;
mod keyring;
mod keys;
mod limits;

pub use audit::{AuditEntry, AuditLog, AuditTarget};
pub use caller::Caller;
pub use keyring::{KeyRing, Principal};
pub use keys::{KeyEntry, KeyLimitSettings, NewKey, Scope, add_key, read_keys, remove_key};
pub use limits::{KeyLimits, Refusal, StreamPermit};

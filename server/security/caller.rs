//! The key behind one call and what it may touch.

use std::sync::Arc;
use std::time::Instant;

use super::keyring::Principal;
use crate::error::Error;

/// Who is calling: a key, or anyone when the server requires no keys.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    principal: Option<Arc<Principal>>,
}

impl Caller {
    /// A caller on a server that requires no keys: may do everything.
    pub fn anyone() -> Caller {
        Caller { principal: None }
    }

    /// A caller holding `principal`'s key.
    pub fn with_key(principal: Arc<Principal>) -> Caller {
        Caller {
            principal: Some(principal),
        }
    }

    /// The key, if the call presented one.
    pub fn principal(&self) -> Option<&Arc<Principal>> {
        self.principal.as_ref()
    }

    /// The key's public id, for logs and audit lines.
    pub fn key_id(&self) -> Option<&str> {
        self.principal.as_deref().map(|p| p.id.as_str())
    }

    /// Whether the key is limited to some namespaces.
    pub fn is_limited(&self) -> bool {
        self.principal
            .as_deref()
            .is_some_and(|p| !p.namespaces.is_empty())
    }

    /// Whether the caller may touch the key-value namespace or collection
    /// `name`.
    pub fn may_touch(&self, name: &str) -> bool {
        match self.principal.as_deref() {
            Some(p) if !p.namespaces.is_empty() => p
                .namespaces
                .iter()
                .any(|prefix| name.starts_with(prefix.as_str())),
            _ => true,
        }
    }

    /// Whether the key may start spending model tokens now (its
    /// `tokens_per_minute` is not used up).
    pub fn admit_tokens(&self) -> Result<(), Error> {
        let Some(p) = self.principal.as_deref() else {
            return Ok(());
        };
        p.limits
            .admit_tokens(Instant::now())
            .map_err(|refusal| Error::RateLimited {
                message: format!("key {}: {refusal}", p.id),
                retry_after: refusal.retry_after(),
            })
    }

    /// Whether the key's model tokens are counted (it has a
    /// `tokens_per_minute`).
    pub fn counts_tokens(&self) -> bool {
        self.principal
            .as_deref()
            .is_some_and(|p| p.limits.settings().tokens_per_minute.is_some())
    }

    /// Charges model tokens to the key.
    pub fn charge_tokens(&self, tokens: u64) {
        if let Some(p) = self.principal.as_deref() {
            p.limits.charge_tokens(tokens, Instant::now());
        }
    }

    /// Why the caller may not touch `name` (for a PERMISSION_DENIED).
    pub fn refusal(&self, kind: &str, name: &str) -> String {
        let (id, prefixes) = self
            .principal
            .as_deref()
            .map(|p| (p.id.as_str(), p.namespaces.join(", ")))
            .unwrap_or_default();
        format!(
            "key {id} is limited to names starting with [{prefixes}]; {kind} {name:?} is not one"
        )
    }
}

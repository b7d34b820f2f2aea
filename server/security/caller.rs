//! The key behind one call and what it may touch.

use std::sync::Arc;

use super::keyring::Principal;

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

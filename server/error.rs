//! The error type of the engines.
//!
//! Engines know nothing of gRPC: they describe what went wrong in domain terms
//! and `api::error` turns that into a `tonic::Status` with `google.rpc`
//! details, in one place, so every service reports the same failure the same
//! way. Engines with richer failures add their own enums and convert into
//! this one with `#[from]`.

use std::fmt;

/// Result of an engine operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One invalid field of a request: its path and what is wrong with it,
/// including the limit it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Dotted path of the field, e.g. `inputs[3]`.
    pub field: String,
    /// Why the value is invalid.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`, described by `description`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Engines that are not built yet, named in the UNIMPLEMENTED answers of
/// their RPCs. A variant goes away when its engine lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `server/agents`: specs, agents, swarms, tasks and workers.
    Agents,
}

impl Engine {
    /// Human-readable name, e.g. "embedding engine".
    pub fn name(self) -> &'static str {
        match self {
            Engine::Agents => "agents engine",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What can go wrong in an engine, by the kind of failure a caller must
/// handle differently.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more request fields are invalid. Never empty.
    #[error("invalid request: {}", join(.0))]
    InvalidArgument(Vec<FieldViolation>),

    /// The named resource does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// What kind of thing, e.g. "model", "collection".
        kind: &'static str,
        /// Its name or id.
        name: String,
    },

    /// The resource already exists.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// What kind of thing.
        kind: &'static str,
        /// Its name or id.
        name: String,
    },

    /// A compare-and-set precondition did not hold.
    #[error("version conflict: expected {expected}, found {actual}")]
    VersionConflict {
        /// The version the caller expected.
        expected: u64,
        /// The version stored.
        actual: u64,
    },

    /// The operation is not allowed in the resource's current state.
    #[error("{0}")]
    WrongState(String),

    /// The server is at a configured limit; the caller should retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),

    /// A dependency (a model that is loading, say) is not ready yet.
    #[error("not ready: {0}")]
    NotReady(String),

    /// An upstream model provider failed (and no fallback could continue).
    #[error("model provider failed: {0}")]
    Provider(String),

    /// A timeout set on the request or in config elapsed.
    #[error("timed out: {0}")]
    Timeout(String),

    /// The RPC's engine is not part of this build yet.
    #[error("{method} is not implemented yet: the {engine} is not built in this version of agentd")]
    NotImplemented {
        /// The engine that will serve the RPC.
        engine: Engine,
        /// Full method name, e.g. `agentd.v1.EmbeddingService/Embed`.
        method: String,
    },

    /// An unexpected failure inside the server.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A single invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The RPC `method` of `engine`'s service has no engine behind it yet.
    pub fn not_implemented(engine: Engine, method: impl Into<String>) -> Self {
        Error::NotImplemented {
            engine,
            method: method.into(),
        }
    }
}

fn join(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_lists_every_field() {
        let err = Error::InvalidArgument(vec![
            FieldViolation::new("inputs", "must not be empty"),
            FieldViolation::new("model", "unknown"),
        ]);
        assert_eq!(
            err.to_string(),
            "invalid request: inputs: must not be empty; model: unknown"
        );
    }

    #[test]
    fn not_implemented_names_engine_and_method() {
        let err = Error::not_implemented(Engine::Agents, "agentd.v1.AgentService/Spawn");
        let text = err.to_string();
        assert!(text.contains("agents engine"), "{text}");
        assert!(text.contains("agentd.v1.AgentService/Spawn"), "{text}");
    }
}

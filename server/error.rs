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

    /// The request is not a message of the RPC's request type (it did not
    /// decode): the client's fault, like an invalid field.
    #[error("malformed request: {field}: {description}")]
    Malformed {
        /// The field the decoder stopped at, dotted; empty when unknown.
        field: String,
        /// What the decoder found wrong.
        description: String,
    },

    /// The server is at a configured limit; the caller should retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),

    /// The call carried no API key, or one the server does not know.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// The call's key may not do this (scope, namespace).
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// The call's key is over one of its limits.
    #[error("rate limited: {message}")]
    RateLimited {
        /// Which limit, and its value.
        message: String,
        /// When to retry, if waiting is enough.
        retry_after: Option<std::time::Duration>,
    },

    /// A spending limit was reached.
    #[error("budget exceeded: {0}")]
    BudgetExceeded(String),

    /// A write would grow an in-memory index past its configured limit;
    /// nothing was written. Retrying does not help until data is removed
    /// or the limit raised.
    #[error("memory limit: {0}")]
    MemoryLimit(String),

    /// The disk of the data directory is full: writes fail until space is
    /// freed, reads still work.
    #[error("storage is full: {0}")]
    StorageFull(String),

    /// The store could not read or write (an I/O error); retrying later may
    /// work.
    #[error("storage unavailable: {0}")]
    StorageUnavailable(String),

    /// A dependency (a model that is loading, say) is not ready yet.
    #[error("not ready: {0}")]
    NotReady(String),

    /// An upstream model provider failed (and no fallback could continue).
    #[error("model provider failed: {0}")]
    Provider(String),

    /// A timeout set on the request or in config elapsed.
    #[error("timed out: {0}")]
    Timeout(String),

    /// An external worker reported that it could not finish a task.
    #[error("the worker failed: {0}")]
    WorkerFailed(String),

    /// The worker holding a task's lease went away.
    #[error("lease lost: {0}")]
    LeaseLost(String),

    /// A task did not run: a task it depends on did not succeed.
    #[error("dependency failed: {0}")]
    DependencyFailed(String),

    /// A newer stream took this one's place.
    #[error("superseded: {0}")]
    Superseded(String),

    /// An unexpected failure inside the server.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A single invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The same error with its field paths taken as relative to `path`,
    /// for a request that sits inside a larger message: `start` for the
    /// Start command of a Session stream (`messages` becomes
    /// `start.messages`), `points[3]` for one point of an Upsert. A
    /// violation of the inner message as a whole (empty path) becomes one
    /// of `path`. Other errors are returned unchanged.
    pub fn within(self, path: &str) -> Self {
        match self {
            Error::InvalidArgument(violations) => Error::InvalidArgument(
                violations
                    .into_iter()
                    .map(|v| FieldViolation::new(join_path(path, &v.field), v.description))
                    .collect(),
            ),
            other => other,
        }
    }
}

/// Collects the invalid fields of a request, so that it reports all of
/// them at once rather than one per attempt.
///
/// Field paths are relative to the request message the client sent,
/// dotted for nested fields and indexed for repeated ones
/// (`points[3].payload`), as `google.rpc.BadRequest` expects. An engine
/// names fields relative to its own request; where that request sits
/// inside a larger message, the API prefixes them ([`Error::within`]).
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is invalid and why (with the limit it broke).
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Takes the violations of an invalid-argument error; any other error
    /// is returned for the caller to pass on.
    pub fn absorb(&mut self, err: Error) -> Result<()> {
        match err {
            Error::InvalidArgument(violations) => {
                self.0.extend(violations);
                Ok(())
            }
            other => Err(other),
        }
    }

    /// Whether nothing was found wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` when nothing was found wrong, else every violation at once.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self.0))
        }
    }
}

/// `outer` and a path relative to it as one path.
fn join_path(outer: &str, inner: &str) -> String {
    if inner.is_empty() {
        outer.to_owned()
    } else if outer.is_empty() || inner.starts_with('[') {
        format!("{outer}{inner}")
    } else {
        format!("{outer}.{inner}")
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
    fn violations_collect_and_prefix() {
        let mut v = Violations::new();
        assert!(v.is_empty());
        v.add("k", "must be 1 to 1000, got 0");
        v.absorb(Error::invalid("filter", "is empty")).unwrap();
        assert!(v.absorb(Error::WrongState("paused".into())).is_err());
        v.add("", "the whole message is wrong");
        let err = v.finish().unwrap_err().within("searches[2]");
        let Error::InvalidArgument(fields) = err else {
            panic!("{err}")
        };
        let paths: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            paths,
            ["searches[2].k", "searches[2].filter", "searches[2]"]
        );
        assert!(Violations::new().finish().is_ok());
    }
}

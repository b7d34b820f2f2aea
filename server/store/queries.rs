//! Finished queries: the [`QueryStore`] trait.

use crate::error::Result;

/// A finished query as stored: its summary and event log as JSON (the
/// query engine owns their shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredQuery {
    /// Query id.
    pub id: String,
    /// Start time, Unix milliseconds.
    pub created_at: i64,
    /// Final state name.
    pub state: String,
    /// JSON summary.
    pub info: String,
    /// JSON event log; empty when listed.
    pub events: String,
}

/// Finished queries.
pub trait QueryStore: Send + Sync + std::fmt::Debug + 'static {
    /// Writes (or rewrites) a finished query.
    fn save_query(&self, query: &StoredQuery) -> Result<()>;

    /// One query with its events.
    fn get_query(&self, id: &str) -> Result<Option<StoredQuery>>;

    /// Queries newest first (by start time, then id), optionally in one
    /// state, strictly before the `(created_at, id)` cursor; without events.
    fn list_queries(
        &self,
        state: Option<&str>,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<StoredQuery>>;
}

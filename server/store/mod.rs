//! Durable storage, the source of truth for every engine.
//!
//! Planned shape (issue #4): a `Store` trait with an embedded SQLite
//! implementation (WAL mode, one file under `--data-dir`, versioned
//! migrations) and room for a PostgreSQL one for several replicas. A write is
//! acknowledged only once its transaction has committed.

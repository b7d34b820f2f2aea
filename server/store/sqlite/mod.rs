//! The embedded store: one SQLite file in WAL mode.
//!
//! One connection behind a mutex: SQLite allows one writer at a time anyway,
//! and the calls are short. `synchronous = FULL` makes every commit durable
//! before it returns; WAL keeps readers from blocking on the writer's fsync
//! and turns each commit into one sequential append.
//!
//! Each store trait is implemented in its own file: [`kv`], [`collections`],
//! [`points`], [`queries`]; this one opens and configures the connection.

mod collections;
mod kv;
mod points;
mod queries;

use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;

use super::migrations;
use crate::common::sync::lock;
use crate::error::{Error, Result};

/// The store's file name inside the data directory.
pub const DB_FILE: &str = "agentd.db";

/// SQLite-backed store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

/// A SQLite failure as the engines' error.
fn internal(e: rusqlite::Error) -> Error {
    Error::Internal(format!("store: {e}"))
}

impl SqliteStore {
    /// Opens (creating if needed) `agentd.db` in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .map_err(|e| Error::Internal(format!("opening {}: {e}", path.display())))?;
        Self::init(conn)
    }

    /// An in-memory store, for unit tests.
    #[cfg(test)]
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(internal)?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        // Takes effect only when the file is created (before WAL mode is
        // set). Point rows live in a WITHOUT ROWID B-tree, whose cells stay
        // on their page only up to about a quarter of the page: with the
        // default 4 KiB pages, a 384-dimension vector (1.5 KiB) spilled to an
        // overflow page per point, tripling the bytes written per upsert.
        // 16 KiB pages keep vectors of up to about 1,000 dimensions inline.
        conn.pragma_update(None, "page_size", 16_384)
            .map_err(internal)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(internal)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(internal)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(internal)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(internal)?;
        migrations::apply(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done transaction
        // (rusqlite rolls back on drop), so the connection is still usable.
        lock(&self.conn)
    }
}

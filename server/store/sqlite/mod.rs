//! The embedded store: one SQLite file in WAL mode.
//!
//! One connection behind a mutex: SQLite allows one writer at a time anyway,
//! and the calls are short. `synchronous = FULL` makes every commit durable
//! before it returns; WAL keeps readers from blocking on the writer's fsync
//! and turns each commit into one sequential append.
//!
//! Each store trait is implemented in its own file: [`kv`], [`collections`],
//! [`points`], [`queries`], [`agents`], [`tasks`]; this one opens and
//! configures the connection.

mod agents;
mod collections;
mod group;
mod kv;
mod points;
mod queries;
mod swarms;
mod tasks;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;
use rusqlite::ffi::ErrorCode;
use tokio::sync::watch;

use super::migrations;
use crate::common::sync::lock;
use crate::error::{Error, Result};

/// The store's file name inside the data directory.
pub const DB_FILE: &str = "agentd.db";

/// SQLite-backed store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// The data directory, where [`SqliteStore::has_space`] probes.
    dir: Option<PathBuf>,
    /// Whether the last write found the disk full: set by the first write
    /// refused for lack of space, cleared by the next write that succeeds.
    full: watch::Sender<bool>,
    /// Writes committed together (the agents engine's task writes).
    group: group::Group,
    /// A second connection for the agents' and queries' reads: in WAL mode
    /// it reads the last commit while the writer waits for the disk
    /// (None in memory, where a second connection is another database).
    reader: Option<Mutex<Connection>>,
}

/// A SQLite failure as the engines' error, by what the caller can do about
/// it: a full disk is RESOURCE_EXHAUSTED (free space, then retry), an I/O
/// failure or a locked file UNAVAILABLE (retry), anything else a bug.
fn internal(e: rusqlite::Error) -> Error {
    internal_ref(&e)
}

/// [`internal`] of an error that stays with its owner (one failed commit
/// is every grouped write's error).
fn internal_ref(e: &rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => Error::StorageFull(format!("store: {e}")),
        Some(
            ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::OutOfMemory
            | ErrorCode::FileLockingProtocolFailed,
        ) => Error::StorageUnavailable(format!("store: {e}")),
        _ => Error::Internal(format!("store: {e}")),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `agentd.db` in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(DB_FILE);
        let open = || {
            Connection::open(&path)
                .map_err(|e| Error::Internal(format!("opening {}: {e}", path.display())))
        };
        let mut store = Self::init(open()?, Some(data_dir.to_path_buf()))?;
        // After the writer: the file exists and is in WAL mode.
        let reader = open()?;
        reader
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(internal)?;
        reader
            .pragma_update(None, "temp_store", "MEMORY")
            .map_err(internal)?;
        store.reader = Some(Mutex::new(reader));
        Ok(store)
    }

    /// An in-memory store, for unit tests.
    #[cfg(test)]
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory().map_err(internal)?, None)
    }

    fn init(mut conn: Connection, dir: Option<PathBuf>) -> Result<Self> {
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
        // Statement journals (the undo of one statement inside a larger
        // transaction, opened by an insert into a table with a UNIQUE
        // index) in memory rather than in a temporary file: one write
        // system call per page saved otherwise. Measured on Spawn of 1,000
        // agents, where they took 62% of the handler's thread. Durability
        // is the WAL's, unchanged.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(internal)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(internal)?;
        migrations::apply(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            dir,
            full: watch::channel(false).0,
            group: group::Group::default(),
            reader: None,
        })
    }

    /// Whether the disk is full now, and its changes: true from the first
    /// write refused for lack of space until a write succeeds again.
    pub fn full(&self) -> watch::Receiver<bool> {
        self.full.subscribe()
    }

    /// Runs the write `f` and follows the disk-full state: the first write
    /// refused for lack of space starts an episode (logged once, however
    /// many writes fail during it), the next write that succeeds ends it.
    fn track<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let result = f();
        match &result {
            Err(Error::StorageFull(e)) => {
                if !self.full.send_replace(true) {
                    tracing::error!(
                        error = %e,
                        "storage is full: writes are refused (RESOURCE_EXHAUSTED) until space is freed; reads go on"
                    );
                }
            }
            Ok(_) => {
                if self.full.send_replace(false) {
                    tracing::info!("storage has space again: writes accepted");
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Whether the data directory's disk takes a small write now (64 KiB,
    /// written, synced and removed): how a full episode notices that space
    /// was freed when no write comes to tell it. Marks the episode over
    /// when it does.
    pub fn has_space(&self) -> bool {
        let Some(dir) = &self.dir else {
            return true;
        };
        let probe = dir.join(".space-probe");
        let written = std::fs::File::create(&probe).and_then(|mut f| {
            std::io::Write::write_all(&mut f, &[0u8; 64 * 1024])?;
            f.sync_all()
        });
        let _ = std::fs::remove_file(&probe);
        if written.is_ok() && self.full.send_replace(false) {
            tracing::info!("storage has space again: writes accepted");
        }
        written.is_ok()
    }

    /// Runs `write` in a transaction committed together with the grouped
    /// writes that arrive meanwhile ([`group`]); its result once durable.
    fn grouped<T: Send + 'static>(
        &self,
        write: impl Fn(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.track(|| self.group.write(&self.conn, write))
    }

    /// The connection for reads outside a transaction: the reader when
    /// there is one, which never waits for a commit's fsync.
    fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        match &self.reader {
            Some(reader) => lock(reader),
            None => self.conn(),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done transaction
        // (rusqlite rolls back on drop), so the connection is still usable.
        lock(&self.conn)
    }
}

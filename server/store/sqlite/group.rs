//! Group commit: writes that arrive while another is committing are
//! committed together, in one transaction and one fsync.
//!
//! With `synchronous = FULL` every commit waits for the disk, and SQLite
//! has one writer: a thousand tasks starting at once made a thousand
//! fsyncs in a row. Here the first writer to find no commit under way
//! becomes the leader: it takes every write queued so far (its own first),
//! applies them in one transaction, commits once, and hands each writer
//! its result (a write that fails sends the others back to be written each
//! on its own, so that it alone gets the error). Writers that came meanwhile wait for the next
//! leader, which is one of them. No write is acknowledged before the
//! commit that holds it is durable; if that commit fails, every write in
//! it gets the error.
//!
//! Writers wait on a condition variable: they run on blocking threads
//! (`common::blocking`), never on the async runtime.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

use rusqlite::Connection;

use crate::common::sync::lock;
use crate::error::Result;

/// Most writes one transaction takes, so that a long queue does not make
/// one very large commit.
const MAX_GROUP: usize = 256;

type Value = Box<dyn Any + Send>;
type Job = Box<dyn Fn(&Connection) -> Result<Value> + Send>;

/// The queue of writes and their results.
#[derive(Default)]
pub(super) struct Group {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    next_ticket: u64,
    queue: Vec<(u64, Job)>,
    results: HashMap<u64, Result<Value>>,
    leading: bool,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Group")
            .field("queued", &state.queue.len())
            .field("leading", &state.leading)
            .finish()
    }
}

impl Group {
    /// Runs `write` in a transaction on `conn` (shared with the writes
    /// queued with it) and returns its result once that transaction is
    /// committed.
    pub(super) fn write<T: Send + 'static>(
        &self,
        conn: &Mutex<Connection>,
        write: impl Fn(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let job: Job = Box::new(move |tx| write(tx).map(|v| Box::new(v) as Value));
        let mut state = lock(&self.state);
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push((ticket, job));
        loop {
            if let Some(result) = state.results.remove(&ticket) {
                return result.map(|v| {
                    *v.downcast::<T>()
                        .expect("a group write's result has the type it was queued with")
                });
            }
            if state.leading {
                state = self
                    .done
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            // Lead: commit what is queued (this write among it).
            state.leading = true;
            let take = state.queue.len().min(MAX_GROUP);
            let batch: Vec<(u64, Job)> = state.queue.drain(..take).collect();
            drop(state);
            let leading = Leading {
                group: self,
                tickets: batch.iter().map(|(t, _)| *t).collect(),
            };
            let results = commit(conn, batch);
            std::mem::forget(leading);
            state = lock(&self.state);
            state.results.extend(results);
            state.leading = false;
            self.done.notify_all();
        }
    }
}

/// The leader's duty if a write panics while it commits (dropped only
/// then): its batch's writers get an error instead of waiting forever,
/// and the next writer may lead.
struct Leading<'a> {
    group: &'a Group,
    tickets: Vec<u64>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.group.state);
        for ticket in self.tickets.drain(..) {
            state.results.entry(ticket).or_insert_with(|| {
                Err(crate::error::Error::Internal(
                    "a write committed with this one panicked".into(),
                ))
            });
        }
        state.leading = false;
        self.group.done.notify_all();
    }
}

/// Applies `batch` in one transaction and commits: each write's result.
/// When a write fails, that transaction is rolled back and each write runs
/// again in a transaction of its own, so that the failure stays its own
/// (cheaper than a savepoint around every write, since writes rarely
/// fail).
fn commit(conn: &Mutex<Connection>, batch: Vec<(u64, Job)>) -> Vec<(u64, Result<Value>)> {
    let mut conn = lock(conn);
    if batch.len() > 1 {
        match together(&mut conn, &batch) {
            Ok(Ok(values)) => {
                return batch
                    .iter()
                    .map(|(t, _)| *t)
                    .zip(values.into_iter().map(Ok))
                    .collect();
            }
            Ok(Err(commit_failed)) => {
                return batch
                    .iter()
                    .map(|(t, _)| (*t, Err(super::internal_ref(&commit_failed))))
                    .collect();
            }
            Err(_) => {} // one write failed: each on its own below
        }
    }
    batch
        .iter()
        .map(|(ticket, job)| (*ticket, alone(&mut conn, job)))
        .collect()
}

/// Every write of `batch` in one transaction: their values, or the
/// commit's failure; Err when a write failed (nothing was kept).
fn together(
    conn: &mut Connection,
    batch: &[(u64, Job)],
) -> Result<std::result::Result<Vec<Value>, rusqlite::Error>> {
    let tx = conn.transaction().map_err(super::internal)?;
    let mut values = Vec::with_capacity(batch.len());
    for (_, job) in batch {
        values.push(job(&tx)?);
    }
    Ok(tx.commit().map(|()| values))
}

/// One write in a transaction of its own.
fn alone(conn: &mut Connection, job: &Job) -> Result<Value> {
    let tx = conn.transaction().map_err(super::internal)?;
    let value = job(&tx)?;
    tx.commit().map_err(super::internal)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn table() -> Arc<Mutex<Connection>> {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        Arc::new(Mutex::new(conn))
    }

    fn count(conn: &Mutex<Connection>) -> i64 {
        lock(conn)
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn concurrent_writes_all_land_each_with_its_own_result() {
        let conn = table();
        let group = Arc::new(Group::default());
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let (conn, group) = (conn.clone(), group.clone());
                std::thread::spawn(move || {
                    group.write(&conn, move |tx| {
                        tx.execute("INSERT INTO t (k, v) VALUES (?1, 'x')", [i])
                            .map_err(super::super::internal)?;
                        Ok(i * 10)
                    })
                })
            })
            .collect();
        let mut got: Vec<i64> = threads
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (0..32).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(count(&conn), 32);
    }

    #[test]
    fn in_a_batch_a_failing_write_fails_alone() {
        let conn = table();
        let insert = |k: i64| -> Job {
            Box::new(move |tx| {
                tx.execute("INSERT INTO t (k, v) VALUES (?1, 'x')", [k])
                    .map_err(super::super::internal)?;
                Ok(Box::new(k) as Value)
            })
        };
        // 2 twice: the second fails, the others land.
        let batch = vec![
            (0, insert(1)),
            (1, insert(2)),
            (2, insert(2)),
            (3, insert(3)),
        ];
        let results = commit(&conn, batch);
        let ok: Vec<bool> = results.iter().map(|(_, r)| r.is_ok()).collect();
        assert_eq!(ok, [true, true, false, true]);
        assert_eq!(count(&conn), 3);
    }

    #[test]
    fn a_panicking_write_fails_its_batch_and_the_next_writes_go_on() {
        let conn = table();
        let group = Arc::new(Group::default());
        let (c, g) = (conn.clone(), group.clone());
        let panicked = std::thread::spawn(move || {
            g.write(&c, |_| -> Result<()> { panic!("a bug in a write") })
        })
        .join();
        assert!(panicked.is_err());
        group
            .write(&conn, |tx| {
                tx.execute("INSERT INTO t (k, v) VALUES (1, 'after')", [])
                    .map_err(super::super::internal)?;
                Ok(())
            })
            .unwrap();
        assert_eq!(count(&conn), 1);
    }

    #[test]
    fn a_failing_write_rolls_back_alone() {
        let conn = table();
        let group = Group::default();
        group
            .write(&conn, |tx| {
                tx.execute("INSERT INTO t (k, v) VALUES (1, 'a')", [])
                    .map_err(super::super::internal)?;
                Ok(())
            })
            .unwrap();
        // Inserts a row, then fails: the row goes with it.
        let failed = group.write(&conn, |tx| {
            tx.execute("INSERT INTO t (k, v) VALUES (2, 'b')", [])
                .map_err(super::super::internal)?;
            tx.execute("INSERT INTO t (k, v) VALUES (1, 'dup')", [])
                .map_err(super::super::internal)?;
            Ok(())
        });
        assert!(failed.is_err());
        assert_eq!(count(&conn), 1);
        let v: String = lock(&conn)
            .query_row("SELECT v FROM t WHERE k = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, "a");
    }
}

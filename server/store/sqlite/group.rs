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
//! Each writer waits on a channel of its own (it runs on a blocking
//! thread, `common::blocking`, never on the async runtime): the leader
//! sends each write its result, and hands the lead to the first writer
//! still queued, so a commit wakes exactly the writers it concerns (a
//! condition variable shared by all woke hundreds of threads per commit,
//! each to find that its write was not done yet).

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use rusqlite::Connection;

use crate::common::sync::lock;
use crate::error::Result;

/// Most writes one transaction takes, so that a long queue does not make
/// one very large commit.
const MAX_GROUP: usize = 256;

type Value = Box<dyn Any + Send>;
type Job = Box<dyn Fn(&Connection) -> Result<Value> + Send>;

/// What a queued writer is told.
enum Told {
    /// Its write is committed (or failed).
    Done(Result<Value>),
    /// The previous leader is done: it leads now.
    Lead,
}

/// The queue of writes.
#[derive(Default)]
pub(super) struct Group {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<(Job, SyncSender<Told>)>,
    /// A leader is committing (or has been told to).
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
        let (tx, rx) = sync_channel(1);
        let lead = {
            let mut state = lock(&self.state);
            state.queue.push_back((job, tx));
            !std::mem::replace(&mut state.leading, true)
        };
        if lead {
            self.lead(conn);
        }
        let value = loop {
            match receive(&rx) {
                Told::Done(result) => break result,
                Told::Lead => self.lead(conn),
            }
        };
        value.map(|v| {
            *v.downcast::<T>()
                .expect("a group write's result has the type it was queued with")
        })
    }

    /// Commits the writes queued now (up to [`MAX_GROUP`]), sends each its
    /// result, and passes the lead on to the next writer queued, if any.
    fn lead(&self, conn: &Mutex<Connection>) {
        let (jobs, writers): (Vec<Job>, Vec<SyncSender<Told>>) = {
            let mut state = lock(&self.state);
            let take = state.queue.len().min(MAX_GROUP);
            state.queue.drain(..take).unzip()
        };
        let mut leading = Leading {
            group: self,
            writers,
        };
        let results = commit(conn, &jobs);
        for (writer, result) in leading.writers.drain(..).zip(results) {
            // A writer that is gone (its thread panicked) wants nothing.
            let _ = writer.send(Told::Done(result));
        }
        // `leading` hands the lead on as it drops.
    }
}

/// Waits for what the group tells this writer. Its sender lives in the
/// queue or with a leader until it is used; a leader that panics sends
/// errors as it unwinds.
fn receive(rx: &Receiver<Told>) -> Told {
    rx.recv().unwrap_or_else(|_| {
        Told::Done(Err(crate::error::Error::Internal(
            "the write's commit was abandoned".into(),
        )))
    })
}

/// A leader's batch until each writer has its result. Dropped normally or
/// while a write panics: the writers not yet answered get an error, and
/// the lead goes to the next writer queued (or to the next one to come).
struct Leading<'a> {
    group: &'a Group,
    writers: Vec<SyncSender<Told>>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        for writer in self.writers.drain(..) {
            let _ = writer.send(Told::Done(Err(crate::error::Error::Internal(
                "a write committed with this one panicked".into(),
            ))));
        }
        let mut state = lock(&self.group.state);
        loop {
            match state.queue.front() {
                None => {
                    state.leading = false;
                    return;
                }
                Some((_, next)) => {
                    if next.send(Told::Lead).is_ok() {
                        return;
                    }
                    // Its writer is gone: drop its write and try the next.
                    state.queue.pop_front();
                }
            }
        }
    }
}

/// Applies `batch` in one transaction and commits: each write's result.
/// When a write fails, that transaction is rolled back and each write runs
/// again in a transaction of its own, so that the failure stays its own
/// (cheaper than a savepoint around every write, since writes rarely
/// fail).
fn commit(conn: &Mutex<Connection>, batch: &[Job]) -> Vec<Result<Value>> {
    let mut conn = lock(conn);
    if batch.len() > 1 {
        match together(&mut conn, batch) {
            Ok(Ok(values)) => return values.into_iter().map(Ok).collect(),
            Ok(Err(commit_failed)) => {
                return batch
                    .iter()
                    .map(|_| Err(super::internal_ref(&commit_failed)))
                    .collect();
            }
            Err(_) => {} // one write failed: each on its own below
        }
    }
    batch.iter().map(|job| alone(&mut conn, job)).collect()
}

/// Every write of `batch` in one transaction: their values, or the
/// commit's failure; Err when a write failed (nothing was kept).
fn together(
    conn: &mut Connection,
    batch: &[Job],
) -> Result<std::result::Result<Vec<Value>, rusqlite::Error>> {
    let tx = conn.transaction().map_err(super::internal)?;
    let mut values = Vec::with_capacity(batch.len());
    for job in batch {
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
    use std::time::Duration;

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
        let batch = vec![insert(1), insert(2), insert(2), insert(3)];
        let results = commit(&conn, &batch);
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
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
    fn writers_queued_behind_a_panic_get_answers_and_the_lead_goes_on() {
        let conn = table();
        let group = Arc::new(Group::default());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // A slow first write leads while the others queue behind it: one
        // of them panics in the next batch.
        let spawn = |k: i64, delay: u64, panics: bool| {
            let (c, g, done) = (conn.clone(), group.clone(), done_tx.clone());
            std::thread::spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    g.write(&c, move |tx| {
                        std::thread::sleep(Duration::from_millis(delay));
                        if panics {
                            panic!("a bug in write {k}");
                        }
                        tx.execute("INSERT INTO t (k, v) VALUES (?1, 'x')", [k])
                            .map_err(super::super::internal)?;
                        Ok(k)
                    })
                }));
                let _ = done.send((k, result.map(|r| r.is_ok()).unwrap_or(false)));
            })
        };
        let first = spawn(0, 200, false);
        std::thread::sleep(Duration::from_millis(50));
        let others: Vec<_> = (1..=8).map(|k| spawn(k, 0, k == 4)).collect();
        let mut answered = Vec::new();
        for _ in 0..9 {
            let (k, ok) = done_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("every writer gets an answer");
            answered.push((k, ok));
        }
        first.join().unwrap();
        for t in others {
            t.join().unwrap();
        }
        answered.sort();
        assert!(answered[0].1, "the first write landed");
        assert!(!answered[4].1, "the panicking write failed");
        // Writes after the panic still go through.
        let after = group.write(&conn, |tx| {
            tx.execute("INSERT INTO t (k, v) VALUES (100, 'after')", [])
                .map_err(super::super::internal)
        });
        assert!(after.is_ok());
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

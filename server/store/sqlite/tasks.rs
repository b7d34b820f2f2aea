//! [`TaskStore`] on SQLite: `agent_tasks` and `agent_task_keys`, with the
//! agent row and activity events of each change in the same transaction.

use rusqlite::{Connection, OptionalExtension, params};

use super::agents::{agent_row, append};
use super::{SqliteStore, internal};
use crate::error::{Error, Result};
use crate::store::{StoredEvent, StoredTask, Submitted, TaskChange, TaskStore, TaskWrite};

const TASK_COLUMNS: &str = "id, state, agent_id, created_at, body";

fn stored_task(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredTask> {
    Ok(StoredTask {
        id: row.get(0)?,
        state: row.get(1)?,
        agent_id: row.get(2)?,
        created_at: row.get(3)?,
        body: row.get(4)?,
    })
}

/// An idempotency key's table: `agent_task_keys` (ids: `task_id`) or
/// `agent_swarm_keys` (`swarm_id`).
pub(super) struct KeyTable {
    pub table: &'static str,
    pub ids: &'static str,
}

/// In `tx`: forgets the keys of `keys` older than `since`; then, for
/// `key` = (key, fingerprint), the ids and fingerprint it recorded before,
/// or None after recording it for `ids` (comma-separated: ULIDs have no
/// commas).
pub(super) fn claim_key(
    tx: &Connection,
    keys: &KeyTable,
    key: Option<(&str, &str)>,
    ids: &[&str],
    created_at: i64,
    since: i64,
) -> rusqlite::Result<Option<(Vec<String>, String)>> {
    let KeyTable { table, ids: column } = keys;
    tx.execute(
        &format!("DELETE FROM {table} WHERE created_at < ?1"),
        params![since],
    )?;
    let Some((key, fingerprint)) = key else {
        return Ok(None);
    };
    let existing: Option<(String, String)> = tx
        .query_row(
            &format!("SELECT {column}, fingerprint FROM {table} WHERE key = ?1"),
            params![key],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    if let Some((ids, print)) = existing {
        return Ok(Some((ids.split(',').map(str::to_owned).collect(), print)));
    }
    tx.execute(
        &format!(
            "INSERT INTO {table} (key, fingerprint, {column}, created_at) VALUES (?1, ?2, ?3, ?4)"
        ),
        params![key, fingerprint, ids.join(","), created_at],
    )?;
    Ok(None)
}

/// Writes the task and agent rows of `write` in `tx`, and its events.
fn apply(tx: &Connection, write: &TaskWrite) -> rusqlite::Result<Vec<StoredEvent>> {
    let t = &write.task;
    // Cached statements: every task writes these two or three times.
    tx.prepare_cached(
        "INSERT INTO agent_tasks (id, state, agent_id, created_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET
           state = excluded.state, agent_id = excluded.agent_id, body = excluded.body",
    )?
    .execute(params![t.id, t.state, t.agent_id, t.created_at, t.body])?;
    if let Some(a) = &write.agent {
        tx.prepare_cached("UPDATE agents SET state = ?2, swarm_id = ?3, body = ?4 WHERE id = ?1")?
            .execute(params![a.id, a.state, a.swarm_id, a.body])?;
    }
    append(tx, write.events.clone())
}

/// Task `id`'s row as `conn` sees it (the reader, or a write transaction).
fn task_row(conn: &Connection, id: &str) -> rusqlite::Result<Option<StoredTask>> {
    conn.prepare_cached(&format!(
        "SELECT {TASK_COLUMNS} FROM agent_tasks WHERE id = ?1"
    ))?
    .query_row(params![id], stored_task)
    .optional()
}

impl TaskStore for SqliteStore {
    fn submit_tasks(
        &self,
        writes: &[TaskWrite],
        key: Option<(&str, &str)>,
        since: i64,
    ) -> Result<Submitted> {
        let writes = writes.to_vec();
        let key = key.map(|(k, f)| (k.to_owned(), f.to_owned()));
        self.grouped(move |tx| {
            let ids: Vec<&str> = writes.iter().map(|w| w.task.id.as_str()).collect();
            let created = writes.first().map_or(0, |w| w.task.created_at);
            let keys = KeyTable {
                table: "agent_task_keys",
                ids: "task_id",
            };
            let key = key.as_ref().map(|(k, f)| (k.as_str(), f.as_str()));
            if let Some((ids, print)) =
                claim_key(tx, &keys, key, &ids, created, since).map_err(internal)?
            {
                return Ok(Submitted::Existing(ids, print));
            }
            let mut events = Vec::new();
            for write in &writes {
                events.extend(apply(tx, write).map_err(internal)?);
            }
            Ok(Submitted::Created(events))
        })
    }

    fn save_task(&self, write: &TaskWrite) -> Result<Vec<StoredEvent>> {
        let write = write.clone();
        self.grouped(move |tx| apply(tx, &write).map_err(internal))
    }

    fn update_task(
        &self,
        task_id: &str,
        agent_id: &str,
        change: TaskChange,
    ) -> Result<Option<Vec<StoredEvent>>> {
        let (task_id, agent_id) = (task_id.to_owned(), agent_id.to_owned());
        self.grouped(move |tx| {
            let task =
                task_row(tx, &task_id)
                    .map_err(internal)?
                    .ok_or_else(|| Error::NotFound {
                        kind: "task",
                        name: task_id.clone(),
                    })?;
            let agent = if agent_id.is_empty() {
                None
            } else {
                agent_row(tx, &agent_id).map_err(internal)?
            };
            match change(task, agent)? {
                Some(write) => Ok(Some(apply(tx, &write).map_err(internal)?)),
                None => Ok(None),
            }
        })
    }

    fn get_task(&self, id: &str) -> Result<Option<StoredTask>> {
        task_row(&self.read(), id).map_err(internal)
    }

    fn list_tasks(
        &self,
        state: &str,
        agent_id: &str,
        before: &str,
        limit: usize,
    ) -> Result<Vec<StoredTask>> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM agent_tasks
                 WHERE seq < COALESCE((SELECT seq FROM agent_tasks WHERE id = ?1), 9223372036854775807)
                   AND (?2 = '' OR state = ?2)
                   AND (?3 = '' OR agent_id = ?3)
                 ORDER BY seq DESC LIMIT ?4"
            ))
            .map_err(internal)?;
        let rows = stmt
            .query_map(params![before, state, agent_id, limit as i64], stored_task)
            .map_err(internal)?;
        rows.collect::<rusqlite::Result<_>>().map_err(internal)
    }

    fn count_tasks_by_state(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached("SELECT state, COUNT(*) FROM agent_tasks GROUP BY state")
            .map_err(internal)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))
            .map_err(internal)?;
        rows.collect::<rusqlite::Result<_>>().map_err(internal)
    }

    fn unfinished_tasks(&self) -> Result<Vec<StoredTask>> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM agent_tasks
                 WHERE state IN ('pending', 'running') ORDER BY seq"
            ))
            .map_err(internal)?;
        let rows = stmt.query_map([], stored_task).map_err(internal)?;
        rows.collect::<rusqlite::Result<_>>().map_err(internal)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{AgentStore, NewEvent, SpawnWrite, StoredAgent};

    fn task(id: &str) -> TaskWrite {
        TaskWrite {
            task: StoredTask {
                id: id.to_owned(),
                state: "pending".into(),
                agent_id: String::new(),
                created_at: 1,
                body: "{}".into(),
            },
            agent: None,
            events: Vec::new(),
        }
    }

    #[test]
    fn changes_read_the_rows_inside_the_transaction_and_never_lose_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let agent = StoredAgent {
            id: "a".into(),
            spec_name: "s".into(),
            spec_version: 1,
            swarm_id: String::new(),
            state: "idle".into(),
            created_at: 1,
            body: "[]".into(),
        };
        let spawn = SpawnWrite {
            agents: vec![agent],
            specs: Vec::new(),
            keys: Vec::new(),
            swarms: Vec::new(),
            events: Vec::new(),
        };
        store.spawn(&spawn, 0).unwrap();
        let ids: Vec<String> = (0..16).map(|i| format!("t{i:02}")).collect();
        let writes: Vec<TaskWrite> = ids.iter().map(|id| task(id)).collect();
        store.submit_tasks(&writes, None, 0).unwrap();

        // Sixteen tasks start on one agent at once, each adding itself to
        // the agent's row as the transaction reads it: none is lost.
        let threads: Vec<_> = ids
            .iter()
            .cloned()
            .map(|id| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let change: TaskChange = Arc::new(|task, agent| {
                        let mut agent = agent.expect("the agent's row");
                        let mut running: Vec<String> = serde_json::from_str(&agent.body).unwrap();
                        running.push(task.id.clone());
                        agent.body = serde_json::to_string(&running).unwrap();
                        let event = NewEvent {
                            kind: "task_assigned".into(),
                            task_id: task.id.clone(),
                            ..Default::default()
                        };
                        Ok(Some(TaskWrite {
                            task: StoredTask {
                                state: "running".into(),
                                agent_id: agent.id.clone(),
                                ..task
                            },
                            agent: Some(agent),
                            events: vec![event],
                        }))
                    });
                    store.update_task(&id, "a", change)
                })
            })
            .collect();
        for t in threads {
            let events = t.join().unwrap().unwrap().expect("written");
            assert_eq!(events.len(), 1);
        }
        let body = store.get_agent("a").unwrap().unwrap().body;
        let mut running: Vec<String> = serde_json::from_str(&body).unwrap();
        running.sort();
        assert_eq!(running, ids);
        assert!(
            ids.iter()
                .all(|id| store.get_task(id).unwrap().unwrap().state == "running")
        );

        // A change that writes nothing leaves everything as it was.
        let nothing: TaskChange = Arc::new(|_, _| Ok(None));
        assert_eq!(
            store.update_task("t00", "a", nothing.clone()).unwrap(),
            None
        );
        assert_eq!(store.get_agent("a").unwrap().unwrap().body, body);
        // No such task: NotFound, naming it.
        let err = store.update_task("nope", "a", nothing).unwrap_err();
        assert!(
            matches!(err, Error::NotFound { kind: "task", ref name } if name == "nope"),
            "{err}"
        );
    }
}

//! [`AgentStore`] on SQLite: `agent_specs` (every version), `agents`,
//! `agent_spawn_keys` and `agent_events`, each write one transaction with
//! the events it causes.

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, internal};
use crate::error::Result;
use crate::store::{
    AgentQuery, AgentStore, EventQuery, NewEvent, SpawnWrite, Spawned, SpecDeleted, SpecRegistered,
    StoredAgent, StoredEvent, StoredSpec,
};

/// Appends `events` in `tx`; their ids, in order.
pub(super) fn append(tx: &Connection, events: Vec<NewEvent>) -> rusqlite::Result<Vec<StoredEvent>> {
    // A plain insert and the connection's last rowid: RETURNING costs a
    // result row per event (a Spawn of 1,000 writes 1,000).
    let mut stmt = tx.prepare_cached(
        "INSERT INTO agent_events (time, kind, agent_id, swarm_id, task_id, spec_name, message, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    events
        .into_iter()
        .map(|e| {
            stmt.execute(params![
                e.time,
                e.kind,
                e.agent_id,
                e.swarm_id,
                e.task_id,
                e.spec_name,
                e.message,
                e.details
            ])?;
            Ok(StoredEvent {
                id: tx.last_insert_rowid() as u64,
                event: e,
            })
        })
        .collect()
}

fn stored_spec(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredSpec> {
    Ok(StoredSpec {
        name: row.get(0)?,
        version: row.get::<_, i64>(1)? as u64,
        updated_at: row.get(2)?,
        body: row.get(3)?,
    })
}

const AGENT_COLUMNS: &str = "id, spec_name, spec_version, swarm_id, state, created_at, body";

/// Agent `id`'s row as `conn` sees it (the reader, or a write transaction).
pub(super) fn agent_row(conn: &Connection, id: &str) -> rusqlite::Result<Option<StoredAgent>> {
    conn.prepare_cached(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1"))?
        .query_row(params![id], stored_agent)
        .optional()
}

fn stored_agent(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAgent> {
    Ok(StoredAgent {
        id: row.get(0)?,
        spec_name: row.get(1)?,
        spec_version: row.get::<_, i64>(2)? as u64,
        swarm_id: row.get(3)?,
        state: row.get(4)?,
        created_at: row.get(5)?,
        body: row.get(6)?,
    })
}

fn stored_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        id: row.get::<_, i64>(0)? as u64,
        event: NewEvent {
            time: row.get(1)?,
            kind: row.get(2)?,
            agent_id: row.get(3)?,
            swarm_id: row.get(4)?,
            task_id: row.get(5)?,
            spec_name: row.get(6)?,
            message: row.get(7)?,
            details: row.get(8)?,
        },
    })
}

impl AgentStore for SqliteStore {
    fn register_spec(
        &self,
        name: &str,
        body: &str,
        now: i64,
        mut event: NewEvent,
    ) -> Result<SpecRegistered> {
        self.track(|| {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(internal)?;
            let latest: Option<i64> = tx
                .query_row(
                    "SELECT MAX(version) FROM agent_specs WHERE name = ?1",
                    params![name],
                    |row| row.get(0),
                )
                .map_err(internal)?;
            let had_current: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM agent_specs WHERE name = ?1 AND current = 1)",
                    params![name],
                    |row| row.get(0),
                )
                .map_err(internal)?;
            let version = latest.unwrap_or(0) + 1;
            tx.execute(
                "UPDATE agent_specs SET current = 0 WHERE name = ?1 AND current = 1",
                params![name],
            )
            .map_err(internal)?;
            tx.execute(
                "INSERT INTO agent_specs (name, version, updated_at, current, body)
                 VALUES (?1, ?2, ?3, 1, ?4)",
                params![name, version, now, body],
            )
            .map_err(internal)?;
            event.details = serde_json::json!({ "version": version }).to_string();
            let events = append(&tx, vec![event]).map_err(internal)?;
            tx.commit().map_err(internal)?;
            Ok(SpecRegistered {
                spec: StoredSpec {
                    name: name.to_owned(),
                    version: version as u64,
                    updated_at: now,
                    body: body.to_owned(),
                },
                created: !had_current,
                events,
            })
        })
    }

    fn get_spec(&self, name: &str, version: Option<u64>) -> Result<Option<StoredSpec>> {
        let conn = self.read();
        match version {
            None => conn
                .prepare_cached(
                    "SELECT name, version, updated_at, body FROM agent_specs
                     WHERE name = ?1 AND current = 1",
                )
                .and_then(|mut stmt| stmt.query_row(params![name], stored_spec).optional()),
            Some(v) => conn
                .prepare_cached(
                    "SELECT name, version, updated_at, body FROM agent_specs
                     WHERE name = ?1 AND version = ?2",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![name, v as i64], stored_spec)
                        .optional()
                }),
        }
        .map_err(internal)
    }

    fn list_specs(&self, capability: &str, after: &str, limit: usize) -> Result<Vec<StoredSpec>> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, version, updated_at, body FROM agent_specs
                 WHERE current = 1 AND name > ?1
                   AND (?2 = '' OR EXISTS (
                        SELECT 1 FROM json_each(agent_specs.body, '$.capabilities')
                        WHERE json_each.value = ?2))
                 ORDER BY name LIMIT ?3",
            )
            .map_err(internal)?;
        let rows = stmt
            .query_map(params![after, capability, limit as i64], stored_spec)
            .map_err(internal)?;
        rows.collect::<rusqlite::Result<_>>().map_err(internal)
    }

    fn delete_spec(&self, name: &str, event: NewEvent) -> Result<SpecDeleted> {
        self.track(|| {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(internal)?;
            let exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM agent_specs WHERE name = ?1 AND current = 1)",
                    params![name],
                    |row| row.get(0),
                )
                .map_err(internal)?;
            if !exists {
                return Ok(SpecDeleted::Absent);
            }
            let live: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM agents WHERE spec_name = ?1 AND state <> 'stopped'",
                    params![name],
                    |row| row.get(0),
                )
                .map_err(internal)?;
            if live > 0 {
                return Ok(SpecDeleted::InUse(live as u64));
            }
            tx.execute(
                "UPDATE agent_specs SET current = 0 WHERE name = ?1",
                params![name],
            )
            .map_err(internal)?;
            let events = append(&tx, vec![event]).map_err(internal)?;
            tx.commit().map_err(internal)?;
            Ok(SpecDeleted::Deleted(events))
        })
    }

    fn spawn_key(&self, key: &str, since: i64) -> Result<Option<(String, Vec<String>)>> {
        let found: Option<(String, String)> = self
            .read()
            .query_row(
                "SELECT fingerprint, agent_ids FROM agent_spawn_keys
                 WHERE key = ?1 AND created_at >= ?2",
                params![key, since],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(internal)?;
        found
            .map(|(fingerprint, ids)| {
                let ids: Vec<String> = serde_json::from_str(&ids).map_err(|e| {
                    crate::error::Error::Internal(format!("store: spawn key {key}: {e}"))
                })?;
                Ok((fingerprint, ids))
            })
            .transpose()
    }

    fn spawn(&self, write: &SpawnWrite, forget_before: i64) -> Result<Spawned> {
        self.track(|| {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(internal)?;
            for (name, version) in &write.specs {
                let current: Option<i64> = tx
                    .query_row(
                        "SELECT version FROM agent_specs WHERE name = ?1 AND current = 1",
                        params![name],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(internal)?;
                if current != Some(*version as i64) {
                    return Ok(Spawned::SpecChanged(name.clone()));
                }
            }
            tx.execute(
                "DELETE FROM agent_spawn_keys WHERE created_at < ?1",
                params![forget_before],
            )
            .map_err(internal)?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO agents (id, spec_name, spec_version, swarm_id, state, created_at, body)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .map_err(internal)?;
                for a in &write.agents {
                    insert
                        .execute(params![
                            a.id,
                            a.spec_name,
                            a.spec_version as i64,
                            a.swarm_id,
                            a.state,
                            a.created_at,
                            a.body
                        ])
                        .map_err(internal)?;
                }
                let mut key = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO agent_spawn_keys (key, fingerprint, agent_ids, created_at)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(internal)?;
                let now = write.agents.first().map_or(0, |a| a.created_at);
                for (k, fingerprint, ids) in &write.keys {
                    let ids = serde_json::to_string(ids).unwrap_or_default();
                    key.execute(params![k, fingerprint, ids, now])
                        .map_err(internal)?;
                }
            }
            for swarm in &write.swarms {
                super::swarms::put_swarm(&tx, swarm).map_err(internal)?;
            }
            let events = append(&tx, write.events.clone()).map_err(internal)?;
            tx.commit().map_err(internal)?;
            Ok(Spawned::Created(events))
        })
    }

    fn get_agent(&self, id: &str) -> Result<Option<StoredAgent>> {
        agent_row(&self.read(), id).map_err(internal)
    }

    fn list_agents(
        &self,
        query: &AgentQuery,
        after: &str,
        limit: usize,
    ) -> Result<Vec<StoredAgent>> {
        // Only the filters that are set (a swarm's repeating its partial
        // index's condition), so that SQLite can use an index for them.
        let mut sql = format!(
            "SELECT {AGENT_COLUMNS} FROM agents
             WHERE seq > COALESCE((SELECT seq FROM agents WHERE id = ?), 0)"
        );
        let mut values: Vec<rusqlite::types::Value> = vec![after.to_owned().into()];
        if !query.spec_name.is_empty() {
            sql.push_str(" AND spec_name = ?");
            values.push(query.spec_name.clone().into());
        }
        if !query.swarm_id.is_empty() {
            sql.push_str(" AND swarm_id = ? AND swarm_id <> ''");
            values.push(query.swarm_id.clone().into());
        }
        if !query.state.is_empty() {
            sql.push_str(" AND state = ?");
            values.push(query.state.clone().into());
        }
        sql.push_str(" ORDER BY seq LIMIT ?");
        values.push((limit as i64).into());
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&sql).map_err(internal)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), stored_agent)
            .map_err(internal)?;
        rows.collect::<rusqlite::Result<_>>().map_err(internal)
    }

    fn update_agent(&self, agent: &StoredAgent, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>> {
        self.track(|| {
            let mut conn = self.conn();
            let tx = conn.transaction().map_err(internal)?;
            tx.execute(
                "UPDATE agents SET state = ?2, swarm_id = ?3, body = ?4 WHERE id = ?1",
                params![agent.id, agent.state, agent.swarm_id, agent.body],
            )
            .map_err(internal)?;
            let events = append(&tx, events).map_err(internal)?;
            tx.commit().map_err(internal)?;
            Ok(events)
        })
    }

    fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>> {
        self.grouped(move |tx| append(tx, events.clone()).map_err(internal))
    }

    fn list_events(
        &self,
        query: &EventQuery,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        // Only the filters that are set, each repeating its index's
        // condition (`<> ''`), so that SQLite seeks the partial index of
        // an agent, swarm or task instead of scanning the log.
        let mut sql = String::from(
            "SELECT id, time, kind, agent_id, swarm_id, task_id, spec_name, message, details
             FROM agent_events WHERE id > ?",
        );
        let mut values: Vec<rusqlite::types::Value> = vec![(after as i64).into()];
        for (column, value) in [
            ("agent_id", &query.agent_id),
            ("swarm_id", &query.swarm_id),
            ("task_id", &query.task_id),
        ] {
            if !value.is_empty() {
                sql.push_str(&format!(" AND {column} = ? AND {column} <> ''"));
                values.push(value.clone().into());
            }
        }
        if !query.kinds.is_empty() {
            sql.push_str(" AND kind IN (SELECT value FROM json_each(?))");
            values.push(
                serde_json::to_string(&query.kinds)
                    .unwrap_or_else(|_| "[]".into())
                    .into(),
            );
        }
        sql.push_str(" ORDER BY id LIMIT ?");
        values.push((limit as i64).into());
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&sql).map_err(internal)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), stored_event)
            .map_err(internal)?;
        rows.collect::<rusqlite::Result<_>>().map_err(internal)
    }

    fn count_agents_by_state(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.read();
        let mut stmt = conn
            .prepare_cached("SELECT state, COUNT(*) FROM agents GROUP BY state")
            .map_err(internal)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))
            .map_err(internal)?;
        rows.collect::<rusqlite::Result<_>>().map_err(internal)
    }

    fn last_event_id(&self) -> Result<u64> {
        let id: Option<i64> = self
            .read()
            .query_row("SELECT MAX(id) FROM agent_events", [], |row| row.get(0))
            .map_err(internal)?;
        Ok(id.unwrap_or(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> NewEvent {
        NewEvent {
            time: 1,
            kind: kind.into(),
            details: "{}".into(),
            ..Default::default()
        }
    }

    fn agent(id: &str, spec: &str, version: u64) -> StoredAgent {
        StoredAgent {
            id: id.into(),
            spec_name: spec.into(),
            spec_version: version,
            swarm_id: String::new(),
            state: "idle".into(),
            created_at: 5,
            body: "{}".into(),
        }
    }

    #[test]
    fn spec_versions_spawns_and_the_log_in_one_transaction_each() {
        let store = SqliteStore::in_memory().unwrap();
        let first = store
            .register_spec("coder", "{\"v\":1}", 10, event("spec_registered"))
            .unwrap();
        assert_eq!((first.spec.version, first.created), (1, true));
        let second = store
            .register_spec("coder", "{\"v\":2}", 11, event("spec_registered"))
            .unwrap();
        assert_eq!((second.spec.version, second.created), (2, false));
        assert_eq!(
            store.get_spec("coder", Some(1)).unwrap().unwrap().body,
            "{\"v\":1}"
        );
        assert_eq!(store.get_spec("coder", None).unwrap().unwrap().version, 2);

        // A spawn against a replaced version is refused whole.
        let stale = SpawnWrite {
            agents: vec![agent("a1", "coder", 1)],
            specs: vec![("coder".into(), 1)],
            keys: vec![],
            swarms: vec![],
            events: vec![event("agent_spawned")],
        };
        assert_eq!(
            store.spawn(&stale, 0).unwrap(),
            Spawned::SpecChanged("coder".into())
        );
        assert!(store.get_agent("a1").unwrap().is_none());
        let write = SpawnWrite {
            agents: vec![agent("a1", "coder", 2), agent("a2", "coder", 2)],
            specs: vec![("coder".into(), 2)],
            keys: vec![("k".into(), "f".into(), vec!["a1".into(), "a2".into()])],
            swarms: vec![],
            events: vec![event("agent_spawned"), event("agent_spawned")],
        };
        let Spawned::Created(events) = store.spawn(&write, 0).unwrap() else {
            panic!()
        };
        assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(
            store.spawn_key("k", 0).unwrap(),
            Some(("f".into(), vec!["a1".into(), "a2".into()]))
        );
        assert!(store.spawn_key("k", 6).unwrap().is_none(), "expired");

        // Not deletable while an agent is not stopped.
        assert_eq!(
            store.delete_spec("coder", event("spec_deleted")).unwrap(),
            SpecDeleted::InUse(2)
        );
        for id in ["a1", "a2"] {
            let mut a = store.get_agent(id).unwrap().unwrap();
            a.state = "stopped".into();
            store
                .update_agent(&a, vec![event("agent_stopped")])
                .unwrap();
        }
        assert!(matches!(
            store.delete_spec("coder", event("spec_deleted")).unwrap(),
            SpecDeleted::Deleted(_)
        ));
        assert!(store.get_spec("coder", None).unwrap().is_none());
        assert_eq!(
            store.delete_spec("coder", event("spec_deleted")).unwrap(),
            SpecDeleted::Absent
        );
        let all = store.list_events(&EventQuery::default(), 0, 100).unwrap();
        assert_eq!(all.len(), 7);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        let stops = store
            .list_events(
                &EventQuery {
                    kinds: vec!["agent_stopped".into()],
                    ..Default::default()
                },
                0,
                100,
            )
            .unwrap();
        assert_eq!(stops.len(), 2);
        assert_eq!(store.last_event_id().unwrap(), 7);
    }
}

-- Tasks of the agents engine, in submission order (`seq`), and the
-- idempotency keys of submissions (kept 24 hours).
CREATE TABLE agent_tasks (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,       -- ULID
    state       TEXT    NOT NULL,              -- pending | running | succeeded | failed | cancelled | timed_out
    agent_id    TEXT    NOT NULL,              -- '' until assigned
    created_at  INTEGER NOT NULL,
    body        TEXT    NOT NULL               -- JSON of agents::TaskBody
);
CREATE INDEX agent_tasks_by_state ON agent_tasks (state, seq);
CREATE INDEX agent_tasks_by_agent ON agent_tasks (agent_id, seq);

CREATE TABLE agent_task_keys (
    key          TEXT    NOT NULL PRIMARY KEY,
    fingerprint  TEXT    NOT NULL,
    task_id      TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;

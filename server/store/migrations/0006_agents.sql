-- The agents engine (AgentService): specs and their versions, agents, the
-- idempotency keys of spawns, and the activity log. Every change and its
-- events are written in one transaction.

-- Every version of every spec: agents keep the version they were spawned
-- with. `current` marks the version new agents get; a deleted spec keeps
-- its old versions (for agents still recorded) with no current one.
CREATE TABLE agent_specs (
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,              -- Unix milliseconds
    current     INTEGER NOT NULL,              -- 1 for the live version
    body        TEXT    NOT NULL,              -- JSON of agents::SpecBody
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE UNIQUE INDEX agent_specs_current ON agent_specs (name) WHERE current = 1;

-- Agents, in spawn order (`seq`).
CREATE TABLE agents (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,     -- ULID
    spec_name     TEXT    NOT NULL,
    spec_version  INTEGER NOT NULL,
    swarm_id      TEXT    NOT NULL,            -- '' for none
    state         TEXT    NOT NULL,            -- idle | busy | unresponsive | stopped
    created_at    INTEGER NOT NULL,
    body          TEXT    NOT NULL             -- JSON of agents::AgentBody
);
CREATE INDEX agents_by_spec ON agents (spec_name, state);
CREATE INDEX agents_by_swarm ON agents (swarm_id);

-- Spawn idempotency keys, kept 24 hours: the request's fingerprint and the
-- agents it made.
CREATE TABLE agent_spawn_keys (
    key          TEXT    NOT NULL PRIMARY KEY,
    fingerprint  TEXT    NOT NULL,
    agent_ids    TEXT    NOT NULL,             -- JSON array
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;

-- The activity log: ids strictly increasing, never reused.
CREATE TABLE agent_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    time        INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    agent_id    TEXT    NOT NULL,
    swarm_id    TEXT    NOT NULL,
    task_id     TEXT    NOT NULL,
    spec_name   TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    details     TEXT    NOT NULL               -- JSON object
);
CREATE INDEX agent_events_by_agent ON agent_events (agent_id, id);
CREATE INDEX agent_events_by_task ON agent_events (task_id, id);
CREATE INDEX agent_events_by_swarm ON agent_events (swarm_id, id);

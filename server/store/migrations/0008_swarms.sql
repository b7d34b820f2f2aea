-- Swarms of the agents engine, in creation order (`seq`), and the
-- idempotency keys of CreateSwarm (kept 24 hours). Members are also marked
-- on their agents (`agents.swarm_id`), in the same transaction.
CREATE TABLE agent_swarms (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,       -- ULID
    state       TEXT    NOT NULL,              -- active | dissolved
    created_at  INTEGER NOT NULL,
    body        TEXT    NOT NULL               -- JSON of agents::SwarmBody
);
CREATE INDEX agent_swarms_by_state ON agent_swarms (state, seq);

CREATE TABLE agent_swarm_keys (
    key          TEXT    NOT NULL PRIMARY KEY,
    fingerprint  TEXT    NOT NULL,
    swarm_id     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;

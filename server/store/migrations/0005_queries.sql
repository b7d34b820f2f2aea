-- Finished LLM queries (QueryControlService): their summary and whole event
-- log, so GetQuery, ListQueries and Attach answer after the in-memory copy
-- is gone and after a restart.
CREATE TABLE queries (
    id          TEXT    NOT NULL PRIMARY KEY,  -- ULID
    created_at  INTEGER NOT NULL,              -- Unix milliseconds
    state       TEXT    NOT NULL,              -- completed | terminated | failed
    info        TEXT    NOT NULL,              -- JSON of query::events::QueryInfo
    events      TEXT    NOT NULL               -- JSON array of query::events::Event
) WITHOUT ROWID;

-- ListQueries pages newest first, optionally by state.
CREATE INDEX queries_by_time ON queries (created_at DESC, id DESC);
CREATE INDEX queries_by_state_time ON queries (state, created_at DESC, id DESC);

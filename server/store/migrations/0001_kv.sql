-- Key-value memory (MemoryService Put/Get/Delete/List).
-- Times are Unix milliseconds. A row whose expires_at has passed is dead:
-- never returned, and deleted by the background purge.
CREATE TABLE kv (
    namespace    TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    value        BLOB    NOT NULL,
    content_type TEXT    NOT NULL,
    metadata     TEXT    NOT NULL,  -- JSON object of strings
    version      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;

CREATE INDEX kv_expires_at ON kv (expires_at) WHERE expires_at IS NOT NULL;

-- Vector collection definitions (MemoryService CreateCollection & co.).
-- Points and their change log come with the vector index.
CREATE TABLE collections (
    name            TEXT    NOT NULL PRIMARY KEY,
    definition      TEXT    NOT NULL,  -- JSON of memory::collections::CollectionDef
    created_at      INTEGER NOT NULL   -- Unix milliseconds
) WITHOUT ROWID;

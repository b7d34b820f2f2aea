-- Points of vector collections. The store is the source of truth; each
-- collection's faiss index is derived from these rows.
--
-- Every change to a collection takes the next `seq` of that collection (so an
-- index snapshot can record the last change it applied and replay the rest),
-- and every stored version of a point gets a fresh `label` (its faiss id), so
-- a replaced or deleted version's label is never reused and can be treated as
-- a tombstone. Deletions are kept in point_deletions for that replay.
ALTER TABLE collections ADD COLUMN next_seq INTEGER NOT NULL DEFAULT 1;
ALTER TABLE collections ADD COLUMN next_label INTEGER NOT NULL DEFAULT 1;

CREATE TABLE points (
    collection TEXT    NOT NULL REFERENCES collections (name) ON DELETE CASCADE,
    id         TEXT    NOT NULL,
    label      INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    vector     BLOB    NOT NULL,  -- little-endian f32
    payload    TEXT    NOT NULL,  -- JSON object
    PRIMARY KEY (collection, id)
) WITHOUT ROWID;

CREATE UNIQUE INDEX points_by_label ON points (collection, label);

CREATE TABLE point_deletions (
    collection TEXT    NOT NULL REFERENCES collections (name) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    label      INTEGER NOT NULL,
    PRIMARY KEY (collection, seq, label)
) WITHOUT ROWID;

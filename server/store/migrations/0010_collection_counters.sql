-- Each collection's point count and size, kept with every write in the same
-- transaction (issue #15): CollectionStats and an unfiltered Count read
-- these instead of scanning the collection's points. A point's size is its
-- id, vector and payload in bytes, plus 16 for its label and sequence.
ALTER TABLE collections ADD COLUMN point_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE collections ADD COLUMN point_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE collections SET
    point_count = (SELECT COUNT(*) FROM points WHERE points.collection = collections.name),
    point_bytes = (
        SELECT COALESCE(SUM(length(CAST(id AS BLOB)) + length(vector)
                            + length(CAST(payload AS BLOB)) + 16), 0)
        FROM points WHERE points.collection = collections.name);

-- Index snapshots replay from the points themselves (labels are never
-- reused, so labels above a snapshot's highest are new, and snapshot labels
-- no longer stored are dead), which makes the deletion log redundant; it only
-- grew.
DROP TABLE point_deletions;

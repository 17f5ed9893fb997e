-- Storage laid out for the writer of the hot path, which commits every few
-- milliseconds and pays for each page it changes (written to the log, then
-- flushed, then copied into the database file).

-- Expiry is found by time alone: the writer keeps the earliest expiry in
-- memory and, when it has passed, expires everything due (consumptions_due).
-- An index by license as well cost every checkout and check-in a write to a
-- page chosen by license, for a lookup that is no longer made.
DROP INDEX IF EXISTS consumptions_license_due;

-- Counters apart from what describes them, a few bytes each: a batch that
-- changes the counters of many licenses then rewrites a few pages of counters
-- rather than one page of wide rows per license. usage_id is an explicit
-- INTEGER PRIMARY KEY so that it survives VACUUM.
CREATE TABLE entitlement_usage_next (
    usage_id    INTEGER PRIMARY KEY,
    license_arn TEXT NOT NULL,
    name        TEXT NOT NULL,
    unit        TEXT NOT NULL,
    max_count   INTEGER,
    overage     INTEGER NOT NULL,
    UNIQUE (license_arn, name)
);
INSERT INTO entitlement_usage_next (usage_id, license_arn, name, unit, max_count, overage)
    SELECT rowid, license_arn, name, unit, max_count, overage FROM entitlement_usage;

CREATE TABLE usage_counts (
    usage_id INTEGER PRIMARY KEY REFERENCES entitlement_usage_next (usage_id) ON DELETE CASCADE,
    consumed INTEGER NOT NULL DEFAULT 0
);
INSERT INTO usage_counts (usage_id, consumed) SELECT rowid, consumed FROM entitlement_usage;

DROP TABLE entitlement_usage;
ALTER TABLE entitlement_usage_next RENAME TO entitlement_usage;

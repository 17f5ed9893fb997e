-- Expiry is found by time alone: the writer keeps the earliest expiry in
-- memory and, when it has passed, expires everything due (consumptions_due).
-- An index by license as well cost every checkout and check-in a write to a
-- page chosen by license, for a lookup that is no longer made.
DROP INDEX IF EXISTS consumptions_license_due;

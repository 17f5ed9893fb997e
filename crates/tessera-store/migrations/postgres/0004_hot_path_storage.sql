-- On SQLite this version lays the hot path's tables out for its single
-- writer: it drops consumptions_license_due (that writer keeps the earliest
-- expiry in memory) and moves the counters into a narrow table of their own.
-- PostgreSQL replicas share no memory, so each batch still finds what is due
-- on the licenses it touches by license, and a counter row is locked and
-- updated in place: the schema stays as it is.
SELECT 1;

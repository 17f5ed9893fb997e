-- On SQLite this version drops consumptions_license_due: its single writer
-- keeps the earliest expiry in memory. PostgreSQL replicas share no memory, so
-- each batch still finds what is due on the licenses it touches by license,
-- and the index stays.
SELECT 1;

//! The store's behaviour, checked against every backend: SQLite on a temporary
//! file and PostgreSQL on a fresh database per test.
//!
//! PostgreSQL is expected at `postgres://root@127.0.0.1:5432/test` (override
//! with `TESSERA_TEST_POSTGRES_URL`). When it cannot be reached the PostgreSQL
//! tests fail, unless `TESSERA_SKIP_POSTGRES=1` says to leave them out.

mod behaviour;
mod concurrency;
mod helpers;
mod migrations;
mod model;

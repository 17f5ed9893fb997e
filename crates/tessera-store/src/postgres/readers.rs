//! Connections for the one-row read every request makes (its access key), held
//! outside the pool: the pool pings a connection each time it is returned, which
//! doubled the round trips of a keyed read and showed as a sixth of the server's
//! CPU under load.

use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{ConnectOptions, PgConnection};
use tokio::sync::Semaphore;

use crate::{Result, StoreError};

/// Most reader connections a server opens.
pub(super) const READERS: usize = 4;

pub(super) struct Readers {
    opts: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
    slots: Semaphore,
}

impl Readers {
    pub(super) fn new(opts: PgConnectOptions) -> Self {
        Self {
            opts,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(READERS),
        }
    }

    /// Refuses further reads and drops the idle connections.
    pub(super) fn close(&self) {
        self.slots.close();
        if let Ok(mut v) = self.idle.lock() {
            v.clear();
        }
    }

    /// Runs `sql` with one text parameter and returns its row, if any. A
    /// connection goes back to the idle list only after a clean answer: one
    /// that failed, or whose caller stopped waiting mid-query, is dropped, and
    /// a fresh one is opened when needed.
    pub(super) async fn fetch_optional(&self, sql: &'static str, key: &str) -> Result<Option<PgRow>> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| StoreError::Config("the access-key readers were shut down".into()))?;
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut conn = match idle {
            Some(c) => c,
            None => tokio::time::timeout(Duration::from_secs(30), self.opts.connect())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)??,
        };
        let row = sqlx::query(sql).bind(key).fetch_optional(&mut conn).await?;
        if let Ok(mut v) = self.idle.lock() {
            v.push(conn);
        }
        Ok(row)
    }
}

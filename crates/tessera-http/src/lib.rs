//! Serving HTTP/1.1 so that no client can hold the server: the accept loop,
//! connection limits and timeouts, and a bounded graceful shutdown. The
//! license server and the environment agent both serve through it.
//!
//! - A connection must finish a request head within `header_read_timeout`
//!   of its first byte, and its body within `body_read_timeout` of the end of
//!   the head (however it trickles in); a connection with no request in
//!   flight that sends nothing for `idle_timeout` (a new one included) is
//!   closed. One sweeper task checks every connection's deadlines a few times
//!   a second, so that a request costs no timer and no extra wake-up.
//! - At most `max_connections` are open at once, a number kept below the
//!   process's file-descriptor limit. When all are taken, the connection that
//!   has been idle (or stalled in its request head) the longest is closed to
//!   make room; when every one has a request in flight, the new connection is
//!   closed at once rather than left waiting.
//! - On shutdown the listener closes, idle connections close, requests in
//!   flight are answered, and after `drain_timeout` whatever is left is
//!   dropped, so the process always exits.

mod watch;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch as signal, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use watch::{Registry, Watch, Watched};

/// The limits a server applies to its clients; `Limits::default()` are the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From a request's first byte to the end of its head.
    pub header_read_timeout: Duration,
    /// From the end of a request's head to the end of its body.
    pub body_read_timeout: Duration,
    /// How long a connection with no request in flight may stay silent.
    pub idle_timeout: Duration,
    /// Connections open at once; None: derived from the descriptor limit.
    pub max_connections: Option<usize>,
    /// How long shutdown waits for requests in flight.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Descriptors kept back from connections: database files, pools, logs, the ops bucket.
const RESERVED_DESCRIPTORS: usize = 128;

/// More connections than this are not allowed by default, whatever the descriptor limit.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Request heads larger than this are refused by hyper before any handler;
/// the handlers refuse smaller ones in their own error shape.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// New connections that may wait for an evicted connection's place at once.
const WAITING: usize = 64;

/// How often the sweeper looks at every connection's deadlines: a timeout
/// fires at most this much late.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

impl Limits {
    /// The connection cap in force: the one configured, never more than the
    /// descriptor limit allows.
    pub fn connection_cap(&self) -> usize {
        let fds = descriptor_limit();
        let room = fds.saturating_sub(RESERVED_DESCRIPTORS).max(16);
        self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS).clamp(1, room)
    }
}

/// The process's soft limit on open file descriptors.
pub fn descriptor_limit() -> usize {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given and nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            return usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX);
        }
    }
    1024
}

/// Serves `router` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cap = limits.connection_cap();
    let permits = Arc::new(Semaphore::new(cap));
    let waiting = Arc::new(Semaphore::new(WAITING));
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = signal::channel(false);
    let sweeper = tokio::spawn(sweep(registry.clone(), limits));
    let mut conns = JoinSet::new();
    tracing::debug!(max_connections = cap, ?limits, "accepting connections");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was taken: pause, go on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            router: router.clone(),
            registry: registry.clone(),
            stop: stop_rx.clone(),
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                conns.spawn(conn.run(stream, permit));
            }
            Err(_) => {
                // Full: the longest-idle connection closes and hands this one its place.
                let Ok(wait) = waiting.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let Some(place) = registry.evict_idlest() else {
                    metrics::counter!(tessera_observe::metrics::CONNECTIONS_REFUSED).increment(1);
                    const FULL: &str = "connection refused: every connection has a request in flight";
                    if let Some(repeated) = tessera_observe::throttle::admit(FULL) {
                        tracing::warn!(%peer, max_connections = cap, repeated, "{FULL}");
                    }
                    drop(stream);
                    continue;
                };
                conns.spawn(async move {
                    let permit = tokio::time::timeout(Duration::from_secs(1), place).await;
                    drop(wait);
                    match permit {
                        Ok(Ok(permit)) => conn.run(stream, permit).await,
                        _ => tracing::warn!(%peer, "a connection waited for an evicted connection's place in vain and was closed"),
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = conns.len();
    if open > 0 {
        tracing::info!(
            connections = open,
            drain_seconds = limits.drain_timeout.as_secs(),
            "draining connections"
        );
    }
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "the drain deadline passed; closing the connections still open"
        );
        conns.shutdown().await;
    }
    sweeper.abort();
    Ok(())
}

/// Closes the connections past a deadline, a few times a second.
async fn sweep(registry: Arc<Registry>, limits: Limits) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        registry.close_expired(&limits);
    }
}

/// One accepted connection and what it needs to serve it.
struct Conn {
    router: Router,
    registry: Arc<Registry>,
    stop: signal::Receiver<bool>,
}

impl Conn {
    /// Serves the connection holding `permit`, its place among the open connections.
    async fn run(mut self, stream: TcpStream, permit: OwnedSemaphorePermit) {
        let watch = Arc::new(Watch::new());
        let id = self.registry.add(watch.clone());
        let open = metrics::gauge!(tessera_observe::metrics::CONNECTIONS_OPEN);
        open.increment(1.0);
        let service = watch::track(self.router, watch.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .keep_alive(true)
            .max_buf_size(MAX_HEAD_BYTES)
            // The sweeper bounds heads and idle time from the first byte.
            .header_read_timeout(None);
        let io = TokioIo::new(Watched::new(stream, watch.clone()));
        let conn = builder.serve_connection(io, TowerToHyperService::new(service));
        let mut conn = std::pin::pin!(conn);
        let mut draining = *self.stop.borrow();
        if draining {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    break;
                }
                why = watch.closing() => {
                    if why == watch::Close::Evicted && watch.answering() {
                        // A request began after the choice: answer it, then close.
                        conn.as_mut().graceful_shutdown();
                        draining = true;
                        continue;
                    }
                    tracing::debug!(reason = ?why, "closing a connection");
                    break;
                }
                changed = self.stop.changed(), if !draining => {
                    draining = true;
                    if changed.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
        self.registry.remove(id);
        open.decrement(1.0);
        watch.hand_over(permit);
    }
}

//! What each connection is doing, for its timeouts and for eviction: when it
//! last received a byte, whether a request head has started, and how many
//! requests are in flight.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tower::Service;

use crate::Limits;

/// No request head has started since the connection last went idle.
const NO_HEAD: u64 = u64::MAX;

pub(crate) struct Watch {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last byte received (or of the last answer).
    last_active: AtomicU64,
    /// Milliseconds after `epoch` of the first byte of the request head being read.
    head_started: AtomicU64,
    in_flight: AtomicU32,
    /// Milliseconds after `epoch` when the request in flight finished its head.
    request_started: AtomicU64,
    /// A request in flight is still receiving its body (its handler may be waiting for it).
    receiving: AtomicBool,
    /// Told to close to make room; not chosen again.
    evicting: AtomicBool,
    /// Told to close, and why (see [`Close`]).
    close: Notify,
    close_why: AtomicU32,
    /// Where the connection's place goes when it closes after being evicted:
    /// to the new connection it was evicted for, and to no one else.
    handoff: Mutex<Option<oneshot::Sender<OwnedSemaphorePermit>>>,
}

impl Watch {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_active: AtomicU64::new(0),
            head_started: AtomicU64::new(NO_HEAD),
            in_flight: AtomicU32::new(0),
            request_started: AtomicU64::new(0),
            receiving: AtomicBool::new(false),
            evicting: AtomicBool::new(false),
            close: Notify::new(),
            close_why: AtomicU32::new(0),
            handoff: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + std::time::Duration::from_millis(ms)
    }

    /// When the connection must have done something: finished a request head,
    /// finished a request body (from the end of the head, however it trickles
    /// in), or sent anything at all; None while a request is being answered.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return self
                .receiving
                .load(Ordering::Acquire)
                .then(|| self.at(self.request_started.load(Ordering::Acquire)) + limits.body_read_timeout);
        }
        match self.head_started.load(Ordering::Acquire) {
            NO_HEAD => Some(self.at(self.last_active.load(Ordering::Acquire)) + limits.idle_timeout),
            started => Some(self.at(started) + limits.header_read_timeout),
        }
    }

    /// Since when the connection may be closed to make room, if it may: it has
    /// no request in flight, or the one in flight has not finished sending its
    /// body (nothing of it has been applied).
    fn idle_since(&self) -> Option<u64> {
        let closable = (self.in_flight.load(Ordering::Acquire) == 0 || self.receiving.load(Ordering::Acquire))
            && !self.evicting.load(Ordering::Acquire);
        closable.then(|| self.last_active.load(Ordering::Acquire))
    }

    fn received(&self) {
        let now = self.now_ms();
        self.last_active.store(now, Ordering::Release);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self
                .head_started
                .compare_exchange(NO_HEAD, now, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn request_started(&self) {
        self.request_started.store(self.now_ms(), Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NO_HEAD, Ordering::Release);
    }

    /// Whether a request is being answered (its body fully received): it must not be cut off.
    pub fn answering(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0 && !self.receiving.load(Ordering::Acquire)
    }

    fn body_received(&self) {
        self.receiving.store(false, Ordering::Release);
    }

    fn request_done(&self) {
        self.receiving.store(false, Ordering::Release);
        self.last_active.store(self.now_ms(), Ordering::Release);
        self.head_started.store(NO_HEAD, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Completes when the connection is told to close; says why.
    pub async fn closing(&self) -> Close {
        self.close.notified().await;
        match self.close_why.load(Ordering::Acquire) {
            1 => Close::Evicted,
            _ => Close::Overstayed,
        }
    }

    fn tell(&self, why: Close) {
        self.close_why.store(why as u32, Ordering::Release);
        self.close.notify_one();
    }

    /// Gives the connection's place to the one it was evicted for, if it was;
    /// otherwise the place returns to the pool with the permit.
    pub fn hand_over(&self, permit: OwnedSemaphorePermit) {
        let to = self.handoff.lock().ok().and_then(|mut h| h.take());
        if let Some(to) = to {
            // A receiver that stopped waiting drops the permit, which returns it to the pool.
            let _ = to.send(permit);
        }
    }
}

/// Why a connection is told to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// Past its header-read, body-read or idle deadline.
    Overstayed = 2,
    /// Its place is given to a new connection.
    Evicted = 1,
}

/// The open connections, for eviction and timeouts.
#[derive(Default)]
pub(crate) struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Watch>>>,
}

impl Registry {
    pub fn add(&self, w: Arc<Watch>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut open) = self.open.lock() {
            open.insert(id, w);
        }
        id
    }

    pub fn remove(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&id);
        }
    }

    /// Tells the connection without a request in flight (or still receiving
    /// its body) that has been quiet the longest to close, and returns where
    /// its place will arrive; None when every connection is busy.
    pub fn evict_idlest(&self) -> Option<oneshot::Receiver<OwnedSemaphorePermit>> {
        let open = self.open.lock().ok()?;
        let (_, w) = open
            .values()
            .filter_map(|w| {
                w.idle_since()
                    .map(|since| (w.epoch + std::time::Duration::from_millis(since), w))
            })
            .min_by_key(|(since, _)| *since)?;
        let (tx, rx) = oneshot::channel();
        *w.handoff.lock().ok()? = Some(tx);
        w.evicting.store(true, Ordering::Release);
        w.tell(Close::Evicted);
        Some(rx)
    }

    /// Tells every connection past a deadline to close.
    pub fn close_expired(&self, limits: &Limits) {
        let Ok(open) = self.open.lock() else { return };
        let now = Instant::now();
        for w in open.values() {
            if w.deadline(limits).is_some_and(|d| d <= now) {
                w.tell(Close::Overstayed);
            }
        }
    }
}

/// A socket that tells its watch when bytes arrive.
pub(crate) struct Watched<T> {
    io: T,
    watch: Arc<Watch>,
}

impl<T> Watched<T> {
    pub fn new(io: T, watch: Arc<Watch>) -> Self {
        Self { io, watch }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.received();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The router, counting the requests in flight on its connection.
#[derive(Clone)]
pub(crate) struct Tracked {
    router: Router,
    watch: Arc<Watch>,
}

pub(crate) fn track(router: Router, watch: Arc<Watch>) -> Tracked {
    Tracked { router, watch }
}

/// Ends a request's flight when its answer is ready, or when it is dropped.
struct InFlight(Arc<Watch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

impl<B> Service<hyper::Request<B>> for Tracked
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <Router as Service<Request>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: hyper::Request<B>) -> Self::Future {
        self.watch.request_started();
        let flight = InFlight(self.watch.clone());
        let watch = self.watch.clone();
        let req = req.map(|b| {
            watch.receiving.store(!b.is_end_stream(), Ordering::Release);
            Body::new(WatchedBody { body: b, watch })
        });
        let answer = <Router as Service<Request>>::call(&mut self.router, req);
        Box::pin(async move {
            let r = answer.await;
            drop(flight);
            r
        })
    }
}

/// A request body that tells its watch when it has been received in full.
struct WatchedBody<B> {
    body: B,
    watch: Arc<Watch>,
}

impl<B> http_body::Body for WatchedBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) || self.body.is_end_stream() {
            self.watch.body_received();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

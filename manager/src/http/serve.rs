//! Serving the API on one listener under load kilnd did not choose.
//!
//! `axum::serve` holds every connection it accepts for as long as the peer
//! likes: 1,100 connections that send half a request line and stop used up
//! kilnd's descriptors, and every other client timed out. Here each
//! listener keeps a table of its connections ([`Table`]):
//!
//! - at most `max_connections`, and `max_connections_per_peer` from one peer
//!   (a uid on the unix socket, an address on TCP);
//! - when full, a new connection pushes out the oldest one that is not in
//!   a request (idle keep-alive, or still sending its head); if all are
//!   busy, the new one gets 503 (429 at its peer's cap) and is closed;
//! - a request head must arrive within `header_timeout_s` (hyper's header
//!   read timeout), and a body may not pause longer than
//!   `body_idle_timeout_s` ([`IdleBody`]);
//! - what is refused or pushed out is logged, at most every 5 s per kind.
//!
//! A connection is busy from the moment its request head is parsed until
//! its response body is dropped, so a long download is never pushed out.
//! Upgraded connections (console attach, websockets) leave the table when
//! they are handed to their handler.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::Router;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tower::ServiceExt;

use crate::config::HttpConfig;

/// What one listener allows.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_peer: usize,
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
}

impl Limits {
    /// From the config, `max_connections` clamped to `fd_budget`.
    pub fn new(c: &HttpConfig, fd_budget: usize) -> Limits {
        Limits {
            max_connections: c.max_connections.min(fd_budget.max(1)),
            max_per_peer: c.max_connections_per_peer,
            header_timeout: Duration::from_secs(c.header_timeout_s),
            body_idle_timeout: Duration::from_secs(c.body_idle_timeout_s),
        }
    }
}

/// A listener whose connections have a peer identity.
pub trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// For the log: "unix socket", "TCP listener".
    const NAME: &'static str;
    fn accept_peer(&self) -> impl Future<Output = std::io::Result<(Self::Io, String)>> + Send;
}

impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    const NAME: &'static str = "unix socket";
    async fn accept_peer(&self) -> std::io::Result<(Self::Io, String)> {
        let (s, _) = self.accept().await?;
        let peer = s
            .peer_cred()
            .map(|c| format!("uid {}", c.uid()))
            .unwrap_or_else(|_| "uid ?".into());
        Ok((s, peer))
    }
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    const NAME: &'static str = "TCP listener";
    async fn accept_peer(&self) -> std::io::Result<(Self::Io, String)> {
        let (s, addr) = self.accept().await?;
        Ok((s, addr.ip().to_string()))
    }
}

/// One open connection.
struct Conn {
    peer: String,
    opened: Instant,
    /// Requests in progress (head parsed, response body not yet dropped).
    busy: Arc<AtomicUsize>,
    evict: Option<oneshot::Sender<()>>,
}

/// The connections of one listener.
#[derive(Default)]
struct Table {
    conns: HashMap<u64, Conn>,
    next: u64,
}

/// Why a connection was not admitted: the status it is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Full {
    Listener,
    Peer,
}

impl Table {
    /// The oldest connection not in a request, of `peer` if given.
    fn oldest_idle(&self, peer: Option<&str>) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| c.busy.load(Ordering::Acquire) == 0 && c.evict.is_some())
            .filter(|(_, c)| peer.is_none_or(|p| c.peer == p))
            .min_by_key(|(_, c)| c.opened)
            .map(|(id, _)| *id)
    }

    /// Pushes out connection `id` (its task closes it).
    fn evict(&mut self, id: u64) {
        if let Some(tx) = self.conns.get_mut(&id).and_then(|c| c.evict.take()) {
            let _ = tx.send(());
        }
    }

    /// Admits a connection from `peer`, pushing out an idle one if full.
    /// Returns its id, busy counter and eviction receiver, and whether one
    /// was pushed out.
    #[allow(clippy::type_complexity)]
    fn admit(
        &mut self,
        peer: &str,
        l: &Limits,
    ) -> Result<(u64, Arc<AtomicUsize>, oneshot::Receiver<()>, bool), Full> {
        let mut pushed = false;
        // Evicted connections stay in the table until their task ends.
        let live = |t: &Table, p: Option<&str>| {
            t.conns
                .values()
                .filter(|c| c.evict.is_some() && p.is_none_or(|p| c.peer == p))
                .count()
        };
        if live(self, Some(peer)) >= l.max_per_peer {
            let id = self.oldest_idle(Some(peer)).ok_or(Full::Peer)?;
            self.evict(id);
            pushed = true;
        }
        if live(self, None) >= l.max_connections {
            let id = self.oldest_idle(None).ok_or(Full::Listener)?;
            self.evict(id);
            pushed = true;
        }
        let (tx, rx) = oneshot::channel();
        let busy = Arc::new(AtomicUsize::new(0));
        let id = self.next;
        self.next += 1;
        self.conns.insert(
            id,
            Conn {
                peer: peer.to_owned(),
                opened: Instant::now(),
                busy: busy.clone(),
                evict: Some(tx),
            },
        );
        Ok((id, busy, rx, pushed))
    }
}

/// Counts of one kind of refusal, logged at most every 5 s.
struct Tally {
    what: &'static str,
    count: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl Tally {
    fn new(what: &'static str) -> Tally {
        Tally {
            what,
            count: AtomicU64::new(0),
            last: Mutex::new(None),
        }
    }

    fn note(&self, listener: &str, peer: &str, open: usize) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            *last = Some(Instant::now());
            self.count.store(0, Ordering::Relaxed);
            tracing::warn!(
                listener,
                peer,
                open,
                count = n,
                "{} (count: since the last such line)",
                self.what
            );
        }
    }
}

/// Serves `app` on `listener` with `limits` until `shutdown` completes;
/// then idle connections are closed and busy ones get up to 5 s.
pub async fn serve<L: Listener>(
    listener: L,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let table = Arc::new(Mutex::new(Table::default()));
    let refused = Tally::new("connection refused: the listener is full of busy connections");
    let pushed = Tally::new("connection pushed out: the listener was full");
    let app = app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let req = req.map(|b| Body::new(IdleBody::new(b, limits.body_idle_timeout)));
            next.run(req)
        },
    ));
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept_peer() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: wait for descriptors to free up.
                    tracing::warn!(listener = L::NAME, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admitted = {
            let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
            let open = t.conns.len();
            let r = t.admit(&peer, &limits);
            match &r {
                Ok((.., true)) => pushed.note(L::NAME, &peer, open),
                Err(_) => refused.note(L::NAME, &peer, open),
                Ok(_) => {}
            }
            r
        };
        match admitted {
            Err(full) => {
                tokio::spawn(refuse(io, full, limits));
            }
            Ok((id, busy, evicted, _)) => {
                tokio::spawn(connection(
                    io,
                    app.clone(),
                    limits,
                    busy,
                    evicted,
                    Remove(table.clone(), id),
                ));
            }
        }
    }
    // Shutting down: idle connections go now, busy ones get a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = {
            let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(id) = t.oldest_idle(None) {
                t.evict(id);
            }
            t.conns.len()
        };
        if left == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Removes its connection from the table when the connection's task ends.
struct Remove(Arc<Mutex<Table>>, u64);

impl Drop for Remove {
    fn drop(&mut self) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.conns.remove(&self.1);
    }
}

/// Serves one connection until it ends, times out or is pushed out.
async fn connection<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: I,
    app: Router,
    limits: Limits,
    busy: Arc<AtomicUsize>,
    evicted: oneshot::Receiver<()>,
    _remove: Remove,
) {
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        busy.fetch_add(1, Ordering::AcqRel);
        let guard = Busy(busy.clone());
        let app = app.clone();
        async move {
            let resp = app.oneshot(req.map(Body::new)).await?;
            // Busy until the response body is dropped (sent or abandoned).
            Ok::<_, std::convert::Infallible>(resp.map(|b| {
                Body::new(http_body_util::BodyExt::map_frame(b, move |f| {
                    let _ = &guard;
                    f
                }))
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = evicted => {}
    }
}

/// Decrements a connection's busy count when dropped.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers a connection that could not be admitted, then closes it: the
/// answer first (the request is not read), then the write side, then what
/// the peer still sends is drained for up to a second, so that closing
/// with unread bytes does not reset a TCP connection and lose the answer.
async fn refuse<I: AsyncRead + AsyncWrite + Unpin>(mut io: I, full: Full, limits: Limits) {
    let (status, body) = match full {
        Full::Listener => (
            "503 Service Unavailable",
            format!(
                "{{\"error\":\"kilnd is serving {} connections on this listener, all busy: try again\"}}",
                limits.max_connections
            ),
        ),
        Full::Peer => (
            "429 Too Many Requests",
            format!(
                "{{\"error\":\"this peer has {} connections open, all busy: try again\"}}",
                limits.max_per_peer
            ),
        ),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        io.write_all(resp.as_bytes()).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 4096];
        while io.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// A request body that fails when it pauses longer than `idle` between
/// frames (a client that announced a body and stopped sending it).
struct IdleBody {
    inner: Body,
    idle: Duration,
    /// When the last frame came (or the body began).
    since: tokio::time::Instant,
    /// Made only once the body has to wait: most bodies never do.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleBody {
    fn new(inner: Body, idle: Duration) -> IdleBody {
        IdleBody {
            inner,
            idle,
            since: tokio::time::Instant::now(),
            sleep: None,
        }
    }
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.since = tokio::time::Instant::now();
                this.sleep = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let deadline = this.since + this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(format!(
                        "the request body paused for more than {} s (http.body_idle_timeout_s)",
                        this.idle.as_secs()
                    ))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_peer: usize) -> Limits {
        Limits {
            max_connections: max,
            max_per_peer: per_peer,
            header_timeout: Duration::from_secs(1),
            body_idle_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_full_table_pushes_out_the_oldest_idle_connection_and_refuses_when_all_are_busy() {
        let l = limits(2, 10);
        let mut t = Table::default();
        let (a, busy_a, mut rx_a, _) = t.admit("p", &l).unwrap();
        let (_b, busy_b, mut rx_b, _) = t.admit("p", &l).unwrap();
        // a is older; both idle: a goes.
        let (_c, busy_c, _rx_c, pushed) = t.admit("q", &l).unwrap();
        assert!(pushed);
        assert!(
            rx_a.try_recv().is_ok(),
            "the oldest idle one was told to go"
        );
        assert!(rx_b.try_recv().is_err());
        t.conns.remove(&a);
        // b and c busy: the next is refused.
        busy_b.fetch_add(1, Ordering::AcqRel);
        busy_c.fetch_add(1, Ordering::AcqRel);
        assert!(matches!(t.admit("r", &l), Err(Full::Listener)));
        drop(busy_a);
    }

    #[test]
    fn a_peer_at_its_cap_pushes_out_its_own_idle_connection_or_is_refused() {
        let l = limits(10, 1);
        let mut t = Table::default();
        let (_, busy, _rx, _) = t.admit("p", &l).unwrap();
        // Another peer is not affected by p's cap.
        assert!(!t.admit("q", &l).unwrap().3);
        busy.fetch_add(1, Ordering::AcqRel);
        assert!(matches!(t.admit("p", &l), Err(Full::Peer)));
        busy.fetch_sub(1, Ordering::AcqRel);
        assert!(t.admit("p", &l).unwrap().3, "p's idle one pushed out");
    }
}

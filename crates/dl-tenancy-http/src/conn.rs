//! The API's sockets: a cap on open connections, and no connection kept without a request.
//! Before a request's headers are read nothing says whose it is, so the fence is on what a
//! socket does, not on who holds it:
//!
//! - a connection with no request running (keep-alive between requests, or headers that
//!   trickle in) is closed after [`IDLE_TIMEOUT`] (answers say `Keep-Alive: timeout=15`, so
//!   clients that read it stop reusing it first); bytes arriving near the deadline give a
//!   request [`ARRIVAL_GRACE`] to start, never more than that past it;
//! - at [`MAX_CONNECTIONS`], a new connection closes the one idle longest: first among those
//!   that never carried a request, then among those idle for [`EVICTABLE_AFTER`]; with none,
//!   the new one is closed at once (requests are bounded in time and per workspace).
//!
//! A connection is only ever ended between requests, never under one, and what its client
//! sent is read before it ends. So thousands of idle or slow sockets cost their holder its own
//! sockets, and a neighbour's next connection still gets in.

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// How long a connection may stay open without a request running.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Connections open at once (each is a file descriptor of `serve`).
pub const MAX_CONNECTIONS: usize = 2048;

/// How long after its last bytes a request may take to start (its headers complete).
pub const ARRIVAL_GRACE: Duration = Duration::from_secs(2);

/// A connection that carried a request is closed to make room only after this long idle, so
/// that a neighbour's keep-alive connection is not taken between two of its calls.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(2);

/// What answers tell clients of [`IDLE_TIMEOUT`] (with a margin).
const KEEP_ALIVE: &str = "timeout=15";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connection's state, shared by its socket and the requests it carries.
#[derive(Debug)]
pub struct Conn {
    running: AtomicUsize,
    closing: AtomicBool,
    /// It carried a workspace's call (eviction takes the others first).
    served: AtomicBool,
    idle_since: Mutex<Instant>,
    /// When bytes last arrived while no request ran.
    arrived: Mutex<Option<Instant>>,
    reader: Mutex<Option<Waker>>,
    /// Where it comes from (the failed-token budget is per address).
    peer: std::net::IpAddr,
}

impl Conn {
    fn new(peer: std::net::IpAddr) -> Conn {
        Conn {
            peer,
            running: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            served: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            arrived: Mutex::new(None),
            reader: Mutex::new(None),
        }
    }

    /// Since when it has had no request running (none: one runs, or it is closing).
    fn idle_since(&self) -> Option<Instant> {
        let idle =
            self.running.load(Ordering::Acquire) == 0 && !self.closing.load(Ordering::Acquire);
        idle.then(|| *lock(&self.idle_since))
    }

    /// When it ends if no request starts: [`IDLE_TIMEOUT`] after its last request (or its
    /// start), moved by bytes arriving by up to [`ARRIVAL_GRACE`].
    fn deadline(&self, since: Instant) -> Instant {
        let idle = since + IDLE_TIMEOUT;
        match *lock(&self.arrived) {
            Some(at) if at >= since => idle.max(at + ARRIVAL_GRACE).min(idle + ARRIVAL_GRACE),
            _ => idle,
        }
    }

    /// Ends the connection at its next read with no request running.
    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        if let Some(w) = lock(&self.reader).take() {
            w.wake();
        }
    }
}

/// A handle on a request's connection (axum's `ConnectInfo`).
#[derive(Clone, Debug)]
pub struct ConnHandle(Arc<Conn>);

impl ConnHandle {
    /// The client's address.
    pub fn peer(&self) -> std::net::IpAddr {
        self.0.peer
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, FencedListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, FencedListener>) -> Self {
        ConnHandle(stream.io().conn.clone())
    }
}

/// Middleware: the connection counts as running a request while the handler runs.
pub async fn track(
    ConnectInfo(ConnHandle(conn)): ConnectInfo<ConnHandle>,
    req: Request,
    next: Next,
) -> Response {
    conn.running.fetch_add(1, Ordering::AcqRel);
    let authenticated = req
        .headers()
        .contains_key(axum::http::header::AUTHORIZATION);
    let done = Done(conn);
    let mut res = next.run(req).await;
    // Only a workspace's own calls make a connection one that carried a request: answers
    // anyone gets without a token (/healthz, 401, 404) or past a limit (429) keep it first
    // in line for eviction, so a flood of them holds no connection for long.
    let status = res.status().as_u16();
    if authenticated && status != 401 && status != 429 {
        done.0.served.store(true, Ordering::Release);
    }
    res.headers_mut().insert(
        axum::http::header::HeaderName::from_static("keep-alive"),
        axum::http::HeaderValue::from_static(KEEP_ALIVE),
    );
    res
}

/// Marks the request done however the handler ends (a dropped future too).
struct Done(Arc<Conn>);

impl Drop for Done {
    fn drop(&mut self) {
        *lock(&self.0.idle_since) = Instant::now();
        self.0.running.fetch_sub(1, Ordering::AcqRel);
        // A connection closed while this request ran ends now that it is done.
        if let Some(w) = lock(&self.0.reader).take() {
            w.wake();
        }
    }
}

/// The API's listener: accepts within [`MAX_CONNECTIONS`].
pub struct FencedListener {
    inner: TcpListener,
    open: Vec<Weak<Conn>>,
    max: usize,
}

impl FencedListener {
    pub fn new(inner: TcpListener) -> Self {
        FencedListener::with_max(inner, MAX_CONNECTIONS)
    }

    fn with_max(inner: TcpListener, max: usize) -> Self {
        FencedListener {
            inner,
            open: Vec::new(),
            max: max.max(1),
        }
    }

    /// Room for one more: the connections that ended are forgotten, and at the cap the one
    /// idle longest is closed (never-served ones first). False when none may be closed.
    fn make_room(&mut self) -> bool {
        self.open.retain(|c| c.strong_count() > 0);
        let open: Vec<Arc<Conn>> = self.open.iter().filter_map(Weak::upgrade).collect();
        let closing = open
            .iter()
            .filter(|c| c.closing.load(Ordering::Acquire))
            .count();
        if open.len() - closing < self.max {
            return true;
        }
        let now = Instant::now();
        let idlest = open
            .iter()
            .filter_map(|c| {
                c.idle_since()
                    .map(|t| (c.served.load(Ordering::Acquire), t, c))
            })
            .filter(|(served, t, _)| !served || now.duration_since(*t) >= EVICTABLE_AFTER)
            .min_by_key(|(served, t, _)| (*served, *t));
        match idlest {
            Some((_, _, c)) => {
                c.close();
                true
            }
            None => false,
        }
    }
}

impl Listener for FencedListener {
    type Io = FencedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: wait a moment instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if !self.make_room() {
                tracing::warn!("connection cap reached with none to close: refused one");
                drop(stream);
                continue;
            }
            let conn = Arc::new(Conn::new(addr.ip()));
            self.open.push(Arc::downgrade(&conn));
            let idle = Box::pin(tokio::time::sleep(IDLE_TIMEOUT));
            return (FencedStream { stream, conn, idle }, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection's socket: reads end when it is closed, or idle past its deadline, and only
/// while no request runs on it.
pub struct FencedStream {
    stream: TcpStream,
    conn: Arc<Conn>,
    idle: Pin<Box<Sleep>>,
}

impl FencedStream {
    /// Whether the connection should end now; otherwise the reader is woken when it should.
    fn over(&mut self, cx: &mut Context<'_>) -> bool {
        *lock(&self.conn.reader) = Some(cx.waker().clone());
        if self.conn.running.load(Ordering::Acquire) > 0 {
            return false;
        }
        if self.conn.closing.load(Ordering::Acquire) {
            return true;
        }
        let Some(since) = self.conn.idle_since() else {
            return false;
        };
        let deadline = self.conn.deadline(since);
        if self.idle.deadline() != deadline {
            self.idle.as_mut().reset(deadline);
        }
        self.idle.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for FencedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // What the client sent is read first: a request that arrived is served, not dropped.
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if self.conn.running.load(Ordering::Acquire) == 0 {
                    *lock(&self.conn.arrived) = Some(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            // Our end of the stream: hyper closes the connection.
            Poll::Pending if self.over(cx) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for FencedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// At the cap, a new connection closes one that never carried a request, not a busy one
    /// nor one that just answered; what a closed connection's client had sent is still read.
    #[tokio::test]
    async fn at_the_cap_an_idle_connection_makes_room() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut l = FencedListener::with_max(inner, 3);
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            served.push(l.accept().await.0);
        }
        // The first never carried a request; the second just answered one; the third runs one.
        served[1].conn.served.store(true, Ordering::Release);
        served[2].conn.running.fetch_add(1, Ordering::AcqRel);
        clients.push(TcpStream::connect(addr).await.unwrap());
        let (mut fourth, _) = l.accept().await;
        let closing: Vec<bool> = served
            .iter()
            .map(|s| s.conn.closing.load(Ordering::Acquire))
            .collect();
        assert_eq!(closing, [true, false, false]);
        // Bytes its client sent before the close are read; then the stream ends.
        clients[0].write_all(b"GET ").await.unwrap();
        let mut buf = [0u8; 4];
        served[0].read_exact(&mut buf).await.unwrap();
        assert_eq!(served[0].read(&mut buf).await.unwrap(), 0);
        clients[3].write_all(b"GET ").await.unwrap();
        assert_eq!(fourth.read(&mut buf).await.unwrap(), 4);
        // Now only the one that just answered is idle, and not for long: no room.
        fourth.conn.running.fetch_add(1, Ordering::AcqRel);
        drop(served.remove(0));
        assert!(!l.make_room());
    }
}

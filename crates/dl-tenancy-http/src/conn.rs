//! The API's sockets: a cap on open connections, and no connection kept without a request.
//! Before a request's headers are read nothing says whose it is, so the fence is on what a
//! socket does, not on who holds it:
//!
//! - a connection with no request running (keep-alive between requests, or headers that
//!   trickle in) is closed after [`IDLE_TIMEOUT`];
//! - at [`MAX_CONNECTIONS`], a new connection closes the one idle longest; with every one
//!   running a request, the new one is closed at once (requests are bounded in time and per
//!   workspace, so that does not last).
//!
//! So thousands of idle or slow sockets cost their holder its own sockets, and a neighbour's
//! next connection still gets in.

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// How long a connection may stay open without a request running.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Connections open at once (each is a file descriptor of `serve`).
pub const MAX_CONNECTIONS: usize = 2048;

/// One connection's state, shared by its socket and the requests it carries.
#[derive(Debug)]
pub struct Conn {
    running: AtomicUsize,
    closing: AtomicBool,
    idle_since: Mutex<Instant>,
    reader: Mutex<Option<Waker>>,
}

impl Conn {
    fn idle_since(&self) -> Option<Instant> {
        let idle =
            self.running.load(Ordering::Acquire) == 0 && !self.closing.load(Ordering::Acquire);
        idle.then(|| *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Ends the connection: its next read sees the end of the stream.
    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        if let Some(w) = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }
}

/// A handle on a request's connection (axum's `ConnectInfo`).
#[derive(Clone, Debug)]
pub struct ConnHandle(Arc<Conn>);

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
    let _done = Done(conn);
    next.run(req).await
}

/// Marks the request done however the handler ends (a dropped future too).
struct Done(Arc<Conn>);

impl Drop for Done {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.running.fetch_sub(1, Ordering::AcqRel);
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
    /// idle longest is closed. False when every one is running a request.
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
        let idlest = open
            .iter()
            .filter_map(|c| c.idle_since().map(|t| (t, c)))
            .min_by_key(|(t, _)| *t);
        match idlest {
            Some((_, c)) => {
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
                tracing::warn!("connection cap reached with every connection busy: refused one");
                drop(stream);
                continue;
            }
            let conn = Arc::new(Conn {
                running: AtomicUsize::new(0),
                closing: AtomicBool::new(false),
                idle_since: Mutex::new(Instant::now()),
                reader: Mutex::new(None),
            });
            self.open.push(Arc::downgrade(&conn));
            let idle = Box::pin(tokio::time::sleep(IDLE_TIMEOUT));
            return (FencedStream { stream, conn, idle }, addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection's socket: reads end when it is closed, or idle past [`IDLE_TIMEOUT`].
pub struct FencedStream {
    stream: TcpStream,
    conn: Arc<Conn>,
    idle: Pin<Box<Sleep>>,
}

impl FencedStream {
    /// Whether the connection should end now; otherwise the reader is woken when it should.
    fn over(&mut self, cx: &mut Context<'_>) -> bool {
        if self.conn.closing.load(Ordering::Acquire) {
            return true;
        }
        *self.conn.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        let Some(since) = self.conn.idle_since() else {
            return false;
        };
        let deadline = since + IDLE_TIMEOUT;
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
        if self.over(cx) {
            // The end of the stream: hyper closes the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
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

    /// At the cap, a new connection closes the one idle longest, not a busy one.
    #[tokio::test]
    async fn at_the_cap_the_idlest_connection_makes_room() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut l = FencedListener::with_max(inner, 2);
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            served.push(l.accept().await.0);
        }
        // The second one runs a request; the first is idle.
        served[1].conn.running.fetch_add(1, Ordering::AcqRel);
        clients.push(TcpStream::connect(addr).await.unwrap());
        let (mut third, _) = l.accept().await;
        assert!(served[0].conn.closing.load(Ordering::Acquire));
        assert!(!served[1].conn.closing.load(Ordering::Acquire));
        // The closed one reads the end of its stream; the new one reads what its client sends.
        let mut buf = [0u8; 4];
        assert_eq!(served[0].read(&mut buf).await.unwrap(), 0);
        clients[2].write_all(b"GET ").await.unwrap();
        assert_eq!(third.read(&mut buf).await.unwrap(), 4);
        // With every open connection busy, there is no room.
        third.conn.running.fetch_add(1, Ordering::AcqRel);
        drop(served.remove(0));
        assert!(!l.make_room());
    }
}

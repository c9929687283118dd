//! Connections: HTTP/1.1 over TCP with the deadlines a public API needs
//! against slow or silent clients (CONTRACT §12), and a shutdown that no
//! client can hold up.
//! - A request's head must arrive within 10 s: from the accept, or from the
//!   first byte of a later request on a kept-alive connection; else 408.
//! - Its body must arrive within 30 s of the end of its head; else 408.
//! - A kept-alive connection with no request under way closes after 60 s.
//! - On shutdown the listener closes, connections with no request under way
//!   close at once, and those with one finish it and then close.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::ServiceExt;

pub const HEAD_DEADLINE: Duration = Duration::from_secs(10);
pub const BODY_DEADLINE: Duration = Duration::from_secs(30);
pub const IDLE_DEADLINE: Duration = Duration::from_secs(60);

/// Answered, then the connection closed, when a head runs out of time.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Serves `router` on `listener` until `stopping` turns true, then waits for
/// the requests under way (the caller bounds how long).
pub async fn serve(listener: TcpListener, router: Router, stopping: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let mut stop = stopping.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, router.clone(), stopping.clone()));
                }
                // Out of descriptors, or a connection reset before its accept: not fatal.
                Err(error) => {
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next() => {}
            () = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // Dropped at once: the guard it returns must not live across an await.
    let _ = stopping.wait_for(|stopping| *stopping).await.map(drop);
}

/// Where a connection is between its requests.
#[derive(Clone, Copy)]
enum Phase {
    /// Waiting for a request's head, which began (or the connection opened) at this instant.
    Head(Instant),
    /// A request is under way: its body has its own deadline.
    Request,
    /// No request under way since this instant, and no byte of another yet.
    Idle(Instant),
}

/// A connection's phase, moved by its reads and its requests.
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = phase;
        self.changed.notify_one();
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn connection(stream: TcpStream, router: Router, mut stopping: watch::Receiver<bool>) {
    let (read, write) = stream.into_split();
    let write = Arc::new(write);
    let activity = Arc::new(Activity { phase: Mutex::new(Phase::Head(Instant::now())), changed: Notify::new() });
    let io = Watched { read, write: Arc::clone(&write), activity: Arc::clone(&activity) };
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            activity.set(Phase::Request);
            let ends = RequestEnds(Arc::clone(&activity));
            let request = request.map(|body| Body::new(Deadline { body, deadline: Box::pin(sleep_until(Instant::now() + BODY_DEADLINE)) }));
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                drop(ends);
                response
            }
        })
    };
    let mut conn = std::pin::pin!(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service));
    let mut draining = false;
    loop {
        let deadline = match activity.phase() {
            Phase::Head(since) => Some((since + HEAD_DEADLINE, true)),
            Phase::Idle(since) => Some((since + IDLE_DEADLINE, false)),
            Phase::Request => None,
        };
        let expired = async {
            match deadline {
                Some((at, _)) => sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = activity.changed.notified() => {}
            _ = expired => {
                if deadline.is_some_and(|(_, answer)| answer) {
                    // Best effort: a client that reads nothing loses only the answer.
                    let _ = write.try_write(REQUEST_TIMEOUT);
                }
                return;
            }
            () = stopped(&mut stopping), if !draining => {
                if !matches!(activity.phase(), Phase::Request) {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// Marks the end of a request when its response is ready, or when the
/// connection drops it unfinished.
struct RequestEnds(Arc<Activity>);

impl Drop for RequestEnds {
    fn drop(&mut self) {
        self.0.set(Phase::Idle(Instant::now()));
    }
}

/// The socket: its reading half, and its writing half shared with the
/// connection's driver so that it can answer 408 itself. A read that brings
/// a new request's first byte starts its head's clock.
struct Watched {
    /// Read as tokio reads a whole stream: into the buffer as it is, not
    /// zeroed first, and a short read ends the socket's readiness without
    /// another `recv` to learn that it would block.
    read: OwnedReadHalf,
    write: Arc<OwnedWriteHalf>,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.read).poll_read(cx, buf))?;
        if buf.filled().len() > before && matches!(self.activity.phase(), Phase::Idle(_)) {
            self.activity.set(Phase::Head(Instant::now()));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let socket: &TcpStream = (*self.write).as_ref();
        loop {
            ready!(socket.poll_write_ready(cx))?;
            match socket.try_write(buf) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// The socket closes when the connection and its driver let go of it.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A request body that must arrive whole by a deadline.
struct Deadline {
    body: Incoming,
    deadline: Pin<Box<Sleep>>,
}

/// The error a body that missed its deadline reads as.
#[derive(Debug)]
pub struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the body did not arrive within {} s of the request's head", BODY_DEADLINE.as_secs())
    }
}

impl std::error::Error for BodyTimedOut {}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        ready!(self.deadline.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

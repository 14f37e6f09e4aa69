//! [`MockShortLinkServer`]: a tiny HTTP/1.1 server for short-link tests.
//!
//! It reads each request (head plus `Content-Length` body), records its raw bytes, and
//! answers with the [`ShortReply`] its script gives for that request (by request number,
//! counted over the whole server). A reply that keeps the connection alive lets the next
//! request arrive on the same connection; every other reply closes it. [`serve_conn`] runs
//! the same logic on any stream, so a test can put TLS in front.
//!
//! [`MockShortLinkServer::close_open_connections`] closes the connections still open from
//! the test's own code, as a server's idle timeout does: the FIN is at the client's socket
//! before the call returns, and the client learns of it only when something reads there.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use phobos_plugin_api::IpPort;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the server answers to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShortReply {
    /// `200 OK` with a `Content-Length` body, then close.
    Ok(Vec<u8>),
    /// This status with a `Content-Length` body, then close.
    Status(u16, Vec<u8>),
    /// `200 OK`, chunked, one chunk per element, then close.
    Chunked(Vec<Vec<u8>>),
    /// `200 OK` with `Connection: keep-alive` and `Keep-Alive: timeout=30`; the connection
    /// stays open for the next request.
    KeepAlive(Vec<u8>),
    /// These bytes exactly, then close.
    Raw(Vec<u8>),
    /// Never answer (the connection stays open until the client gives up).
    Stall,
    /// These bytes, then nothing more (the connection stays open until the client gives
    /// up): a response that stops midway.
    PartialThenStall(Vec<u8>),
}

/// Gives the reply for request number `n` (0-based, over the whole server).
pub type ShortScript = Arc<dyn Fn(usize) -> ShortReply + Send + Sync>;

/// A mock short-link server on `127.0.0.1:0`. Dropping it stops accepting.
pub struct MockShortLinkServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// What the server shares with its connections.
pub struct Shared {
    script: ShortScript,
    requests: Mutex<Vec<Vec<u8>>>,
    accepted: AtomicUsize,
    /// Connections being served now, and the most at once.
    open: AtomicUsize,
    peak_open: AtomicUsize,
    /// A second handle on each tracked connection's socket ([`Shared::track`]), by key.
    sockets: Mutex<HashMap<usize, std::net::TcpStream>>,
    next_key: AtomicUsize,
}

impl Shared {
    /// State for [`serve_conn`] outside a [`MockShortLinkServer`].
    pub fn new(script: impl Fn(usize) -> ShortReply + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Shared {
            script: Arc::new(script),
            requests: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            peak_open: AtomicUsize::new(0),
            sockets: Mutex::new(HashMap::new()),
            next_key: AtomicUsize::new(0),
        })
    }

    /// Takes an accepted connection in: counts it ([`connection_count`](Self::connection_count))
    /// and makes it one [`close_open_connections`](Self::close_open_connections) can close,
    /// until the returned [`Tracked`] is dropped (drop it when the connection's
    /// [`serve_conn`] has returned).
    ///
    /// # Errors
    ///
    /// The socket could not be taken off tokio's reactor, duplicated or put back.
    pub fn track(self: &Arc<Self>, stream: TcpStream) -> io::Result<(TcpStream, Tracked)> {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let std = stream.into_std()?;
        let second = std.try_clone()?;
        let stream = TcpStream::from_std(std)?;
        let key = self.next_key.fetch_add(1, Ordering::SeqCst);
        self.sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, second);
        let tracked = Tracked {
            shared: self.clone(),
            key,
        };
        Ok((stream, tracked))
    }

    /// Shuts down every tracked connection still open (both ways: the client gets a FIN,
    /// and a request it sends afterwards gets a reset, as a closed socket answers). The
    /// shutdown is done on the calling thread, so it has happened when this returns; each
    /// connection's [`serve_conn`] then reads its end and returns.
    pub fn close_open_connections(&self) {
        let sockets: Vec<_> = self
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (_, socket) in sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Every request received so far, raw (head and body), in arrival order.
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connections taken in by [`track`](Self::track) so far.
    pub fn connection_count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl MockShortLinkServer {
    /// Starts a server answering with `script`.
    ///
    /// # Errors
    ///
    /// Binding the listener failed.
    pub async fn start(
        script: impl Fn(usize) -> ShortReply + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Shared::new(script);
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Without it a reply can wait for a delayed ACK, which paused time turns into
                // seconds.
                let _ = stream.set_nodelay(true);
                let Ok((stream, tracked)) = accept_shared.track(stream) else {
                    continue;
                };
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    serve_conn(stream, shared).await;
                    drop(tracked);
                });
            }
        });
        Ok(MockShortLinkServer { addr, shared, task })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's address as the core's type.
    pub fn ip_port(&self) -> IpPort {
        IpPort::from(self.addr)
    }

    /// The host string a task names this server by (`"127.0.0.1:<port>"`).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request received so far, raw.
    pub fn requests(&self) -> Vec<Vec<u8>> {
        self.shared.requests()
    }

    /// Connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.connection_count()
    }

    /// The most connections served at once so far.
    pub fn peak_open_connections(&self) -> usize {
        self.shared.peak_open.load(Ordering::SeqCst)
    }

    /// Closes every connection still open, now: see [`Shared::close_open_connections`].
    pub fn close_open_connections(&self) {
        self.shared.close_open_connections();
    }
}

/// A connection [`Shared::track`] made closable; forgotten when this is dropped.
pub struct Tracked {
    shared: Arc<Shared>,
    key: usize,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.shared
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl Drop for MockShortLinkServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves HTTP/1.1 requests on `stream` until a reply closes it or the client does.
pub async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: Arc<Shared>) {
    let now_open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak_open.fetch_max(now_open, Ordering::SeqCst);
    let _open = OpenGuard(&shared);
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let n = {
            let mut reqs = shared
                .requests
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            reqs.push(request);
            reqs.len() - 1
        };
        let reply = (shared.script)(n);
        let keep = matches!(reply, ShortReply::KeepAlive(_));
        let bytes = match reply {
            ShortReply::Ok(body) => response(200, &body, "close"),
            ShortReply::Status(code, body) => response(code, &body, "close"),
            ShortReply::KeepAlive(body) => response(200, &body, "keep-alive"),
            ShortReply::Chunked(chunks) => {
                let mut out =
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        .to_vec();
                for c in chunks {
                    out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                    out.extend_from_slice(&c);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                out
            }
            ShortReply::Raw(bytes) => bytes,
            ShortReply::Stall => {
                hold(&mut stream).await;
                return;
            }
            ShortReply::PartialThenStall(bytes) => {
                if stream.write_all(&bytes).await.is_ok() {
                    hold(&mut stream).await;
                }
                return;
            }
        };
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
        if !keep {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Holds the connection open until the client closes it.
async fn hold<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// Reads one request (head, then `Content-Length` bytes) from `stream`; `None` at EOF or on
/// a malformed head.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |(_, v)| v.trim().parse::<usize>().ok())?;
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let request: Vec<u8> = buf.drain(..head_end + len).collect();
    Some(request)
}

fn response(status: u16, body: &[u8], connection: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: {connection}\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    if connection == "keep-alive" {
        out.extend_from_slice(b"Keep-Alive: timeout=30\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The largest request head the mock reads.
const MAX_HEAD: usize = 64 * 1024;

/// Counts a connection out of [`Shared::open`] when its [`serve_conn`] ends, however it ends.
struct OpenGuard<'a>(&'a Shared);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_each_request_by_number_and_keeps_alive_when_asked() {
        let server = MockShortLinkServer::start(|n| match n {
            0 => ShortReply::KeepAlive(b"one".to_vec()),
            _ => ShortReply::Ok(b"two".to_vec()),
        })
        .await
        .unwrap();
        let mut s = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let req = b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
        s.write_all(req).await.unwrap();
        s.write_all(req).await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        let text = String::from_utf8(got).unwrap();
        assert!(
            text.contains("keep-alive") && text.ends_with("two"),
            "{text}"
        );
        assert_eq!(server.requests(), vec![req.to_vec(), req.to_vec()]);
        assert_eq!(server.connection_count(), 1);
    }

    #[tokio::test]
    async fn closing_open_connections_sends_a_fin_before_returning() {
        let server = MockShortLinkServer::start(|_| ShortReply::KeepAlive(b"ka".to_vec()))
            .await
            .unwrap();
        let s = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let mut s = s.into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        let answer = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            s.write_all(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            let mut got = vec![0; 1024];
            let n = s.read(&mut got).unwrap();
            got.truncate(n);
            (s, got)
        });
        let (s, got) = answer.await.unwrap();
        assert!(got.ends_with(b"ka"), "{}", String::from_utf8_lossy(&got));
        server.close_open_connections();
        // Nothing else ran meanwhile: the FIN came from the call itself.
        s.set_nonblocking(true).unwrap();
        assert_eq!(
            s.peek(&mut [0u8; 8]).unwrap(),
            0,
            "the server's FIN is there"
        );
    }
}

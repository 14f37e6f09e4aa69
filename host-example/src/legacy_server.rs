//! The demo's long-link server: speaks whatever [`PacketCodec`] the config picked.
//!
//! It understands just enough to show the framework end to end:
//!
//! | Request | Answer |
//! |---|---|
//! | heartbeat (the codec's heartbeat command) | a heartbeat frame with the same head |
//! | identify (sequence `IDENTIFY_SEQ`) | one status byte `0` (accepted), as `TokenAuth` expects |
//! | [`CMD_ECHO`] | the same body |
//! | [`CMD_BROADCAST`] | `ok`, and the body pushed (sequence 0, [`CMD_PUSH`]) to every *other* connection |
//! | anything else | an empty body |
//!
//! A malformed frame closes that connection only; the server keeps serving the others. With a
//! TLS configuration every connection starts with a TLS handshake.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use phobos_plugin_api::codec::{HEARTBEAT_CMD, IDENTIFY_SEQ, PUSH_SEQ};
use phobos_plugin_api::{CmdId, Decoded, FrameHead, PacketCodec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Echo the body back.
pub(crate) const CMD_ECHO: CmdId = CmdId(1);
/// Answer `ok` and push the body to every other connection.
pub(crate) const CMD_BROADCAST: CmdId = CmdId(2);
/// The command id of pushes the server sends.
pub(crate) const CMD_PUSH: CmdId = CmdId(100);

/// A running demo server. Dropping it stops accepting; [`DemoServer::shutdown`] also closes
/// every connection.
#[derive(Debug)]
pub(crate) struct DemoServer {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    next_conn: AtomicU64,
    conns: Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<u8>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    frames: AtomicU64,
}

impl DemoServer {
    /// Binds `addr` (use port 0 for any free port) and starts serving.
    ///
    /// # Errors
    ///
    /// The bind error.
    pub(crate) async fn start(
        addr: SocketAddr,
        codec: Arc<dyn PacketCodec>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept_shared = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let id = accept_shared.next_conn.fetch_add(1, Ordering::Relaxed);
                let (codec, shared) = (codec.clone(), accept_shared.clone());
                let acceptor = tls.clone().map(tokio_rustls::TlsAcceptor::from);
                let task = tokio::spawn(async move {
                    match acceptor {
                        None => serve(id, stream, codec, shared).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => serve(id, tls, codec, shared).await,
                            Err(e) => tracing::warn!(conn = id, error = %e, "TLS handshake failed"),
                        },
                    }
                });
                lock(&accept_shared.tasks).push(task);
            }
        });
        Ok(DemoServer {
            addr,
            accept,
            shared,
        })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many request frames it has answered.
    pub(crate) fn frames_served(&self) -> u64 {
        self.shared.frames.load(Ordering::Relaxed)
    }

    /// Stops accepting and closes every connection.
    pub(crate) fn shutdown(self) {
        self.accept.abort();
        for task in lock(&self.shared.tasks).drain(..) {
            task.abort();
        }
        lock(&self.shared.conns).clear();
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn serve<S>(id: u64, stream: S, codec: Arc<dyn PacketCodec>, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    lock(&shared.conns).insert(id, tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    'conn: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let frame = match codec.decode(&buf) {
                Ok(Decoded::Frame(f)) => f,
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => {
                    tracing::warn!(conn = id, error = %e, "malformed frame; closing the connection");
                    break 'conn;
                }
            };
            let body = buf[frame.body.clone()].to_vec();
            buf.drain(..frame.len);
            shared.frames.fetch_add(1, Ordering::Relaxed);
            let mut out = Vec::new();
            let head = frame.head;
            let encoded = if head.cmd_id == HEARTBEAT_CMD {
                codec.encode(head, &[], &[], &mut out)
            } else if head.seq == IDENTIFY_SEQ {
                codec.encode(head, &[0], &[], &mut out)
            } else if head.cmd_id == CMD_ECHO {
                codec.encode(head, &body, &[], &mut out)
            } else if head.cmd_id == CMD_BROADCAST {
                broadcast(id, &body, codec.as_ref(), &shared);
                codec.encode(head, b"ok", &[], &mut out)
            } else {
                codec.encode(head, &[], &[], &mut out)
            };
            if encoded.is_err() || tx.send(out).is_err() {
                break 'conn;
            }
        }
    }
    lock(&shared.conns).remove(&id);
    drop(tx);
    let _ = writer.await;
}

fn broadcast(from: u64, body: &[u8], codec: &dyn PacketCodec, shared: &Shared) {
    let mut push = Vec::new();
    if codec
        .encode(FrameHead::new(CMD_PUSH, PUSH_SEQ), body, &[], &mut push)
        .is_err()
    {
        return;
    }
    for (id, tx) in lock(&shared.conns).iter() {
        if *id != from {
            let _ = tx.send(push.clone());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps inconsistent (single inserts
    // and removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

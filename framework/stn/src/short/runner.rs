//! [`ShortIo`]: what the driver does for the short-link actions (`ShortConnect`,
//! `HttpExchange`, `Abort`), one tokio task per connect attempt and per exchange, results
//! reported back through the driver's channel as [`ShortEvent`]s.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use phobos_plugin_api::IpPort;
use phobos_stn_proto::{
    ConnId, DialError, Engine, ExchangeError, HttpRequest, HttpResponse, ShortLinkConfig,
};
use rustc_hash::FxHashMap;
use tokio::task::AbortHandle;
use tracing::{debug, trace};

use super::exchange::{H1Conn, Limits};
use super::pool::{wants_keep_alive, Pool, PoolKey};
use super::proxy::ProxyError;
use super::ShortSettings;
use crate::connector::{dial_error, Connector, LinkStream};

/// What a short-link IO task reports.
pub(crate) enum ShortEvent {
    /// A connect attempt gave a connection (fresh or from the pool).
    Connected { attempt: ConnId, conn: Ready },
    /// A connect attempt failed.
    ConnectFailed { attempt: ConnId, error: DialError },
    /// Bytes of a response were read.
    Progress { conn: ConnId, len: usize },
    /// An exchange ended.
    Done {
        conn: ConnId,
        result: Result<HttpResponse, ExchangeError>,
        /// The connection, when it may be reused.
        keep: Option<H1Conn>,
    },
}

/// A connection waiting for its request.
pub(crate) enum Ready {
    Fresh(Box<dyn LinkStream>),
    Reused(H1Conn),
}

/// Where IO tasks send their [`ShortEvent`]s.
pub(crate) type Sink = Arc<dyn Fn(ShortEvent) + Send + Sync>;

/// The driver's short-link state.
pub(crate) struct ShortIo {
    connector: Arc<dyn Connector>,
    /// The same chain without the proxy (for the attempts the engine sends direct).
    direct: Arc<dyn Connector>,
    tls: bool,
    limits: Limits,
    sink: Sink,
    pool: Pool,
    /// Connect attempts in flight.
    connecting: FxHashMap<ConnId, (PoolKey, AbortHandle)>,
    /// Connected, waiting for the engine's `HttpExchange`.
    ready: FxHashMap<ConnId, (PoolKey, Ready)>,
    /// Exchanges running: the pool key and whether the connection was reused.
    exchanging: FxHashMap<ConnId, (PoolKey, bool, AbortHandle)>,
}

impl ShortIo {
    pub(crate) fn new(settings: &ShortSettings, config: &ShortLinkConfig, sink: Sink) -> Self {
        ShortIo {
            connector: settings.connector(),
            direct: settings.connector_with(false),
            tls: settings.tls.is_some(),
            limits: Limits {
                max_head: config.max_head_len,
                max_body: config.max_response_len,
            },
            sink,
            pool: Pool::default(),
            connecting: FxHashMap::default(),
            ready: FxHashMap::default(),
            exchanging: FxHashMap::default(),
        }
    }

    /// `Action::ShortConnect`: a live pooled connection for the same address and host, else
    /// a new one through the connector.
    pub(crate) fn connect(
        &mut self,
        now: Instant,
        attempt: ConnId,
        addr: IpPort,
        host: String,
        proxy: bool,
    ) {
        let key = PoolKey {
            addr,
            host,
            tls: self.tls,
        };
        if let Some(conn) = self.pool.take(&key, now) {
            debug!(conn = %attempt, %addr, "short link: reusing a keep-alive connection");
            let sink = self.sink.clone();
            let task = tokio::spawn(async move {
                sink(ShortEvent::Connected {
                    attempt,
                    conn: Ready::Reused(conn),
                });
            });
            self.connecting.insert(attempt, (key, task.abort_handle()));
            return;
        }
        debug!(conn = %attempt, %addr, proxy, "short link: connecting");
        let connector = if proxy {
            self.connector.clone()
        } else {
            self.direct.clone()
        };
        let sink = self.sink.clone();
        let task = tokio::spawn(async move {
            let ev = match connector.connect(addr).await {
                Ok(stream) => ShortEvent::Connected {
                    attempt,
                    conn: Ready::Fresh(stream),
                },
                Err(e) => ShortEvent::ConnectFailed {
                    attempt,
                    error: short_dial_error(&e),
                },
            };
            sink(ev);
        });
        self.connecting.insert(attempt, (key, task.abort_handle()));
    }

    /// `Action::HttpExchange`: runs the exchange on the connection `conn` in a task.
    pub(crate) fn exchange(&mut self, conn: ConnId, request: HttpRequest) {
        let Some((key, ready)) = self.ready.remove(&conn) else {
            // Not connected (aborted meanwhile): the engine hears nothing, its timers decide.
            return;
        };
        let reused = matches!(ready, Ready::Reused(_));
        let limits = self.limits;
        let sink = self.sink.clone();
        let task = tokio::spawn(async move {
            let progress = sink.clone();
            let mut h1 = match ready {
                Ready::Reused(h1) => h1,
                Ready::Fresh(stream) => match H1Conn::handshake(stream, limits).await {
                    Ok(h1) => h1,
                    Err(e) => {
                        sink(ShortEvent::Done {
                            conn,
                            result: Err(e),
                            keep: None,
                        });
                        return;
                    }
                },
            };
            let on_read = Box::new(move |len| progress(ShortEvent::Progress { conn, len }));
            let ev = match h1.exchange(&request, limits, on_read).await {
                Ok(ex) => {
                    let keep = (ex.reusable
                        && ex.response.status == 200
                        && wants_keep_alive(&request.headers))
                    .then_some(h1);
                    ShortEvent::Done {
                        conn,
                        result: Ok(ex.response),
                        keep,
                    }
                }
                Err(e) => ShortEvent::Done {
                    conn,
                    result: Err(e),
                    keep: None,
                },
            };
            sink(ev);
        });
        self.exchanging
            .insert(conn, (key, reused, task.abort_handle()));
    }

    /// `Action::Abort`: drops the attempt, the waiting connection or the exchange. Returns
    /// whether `conn` was a short-link one.
    pub(crate) fn abort(&mut self, conn: ConnId) -> bool {
        if let Some((_, task)) = self.connecting.remove(&conn) {
            task.abort();
            return true;
        }
        if self.ready.remove(&conn).is_some() {
            return true;
        }
        if let Some((_, _, task)) = self.exchanging.remove(&conn) {
            task.abort();
            return true;
        }
        false
    }

    /// A report of one of the IO tasks: into the engine (unless the engine gave the
    /// connection up meanwhile).
    pub(crate) fn on_event(&mut self, engine: &mut Engine, t: Instant, ev: ShortEvent) {
        match ev {
            ShortEvent::Connected { attempt, conn } => {
                let Some((key, _)) = self.connecting.remove(&attempt) else {
                    return; // aborted meanwhile: dropping closes it
                };
                self.ready.insert(attempt, (key, conn));
                engine.handle_connected(t, attempt);
            }
            ShortEvent::ConnectFailed { attempt, error } => {
                if self.connecting.remove(&attempt).is_some() {
                    debug!(conn = %attempt, ?error, "short link: connect failed");
                    engine.handle_connect_failed(t, attempt, error);
                }
            }
            ShortEvent::Progress { conn, len } => {
                if self.exchanging.contains_key(&conn) {
                    engine.handle_http_progress(t, conn, len);
                }
            }
            ShortEvent::Done { conn, result, keep } => {
                let Some((key, reused, _)) = self.exchanging.remove(&conn) else {
                    return;
                };
                match result {
                    Ok(response) => {
                        trace!(%conn, status = response.status, len = response.body.len(), "short link: response");
                        if let Some(h1) = keep {
                            self.pool.put(key, h1, response.header("keep-alive"), t);
                        }
                        engine.handle_http_response(t, conn, response);
                    }
                    Err(error) => {
                        debug!(%conn, %error, reused, "short link: exchange failed");
                        if reused {
                            // §8.5: a reused connection that gives no response bans reuse.
                            self.pool.ban(t);
                        }
                        engine.handle_http_failed(t, conn, error);
                    }
                }
            }
        }
    }

    /// Drops every cached keep-alive connection (network change, redo).
    pub(crate) fn clear_pool(&mut self) {
        self.pool.clear();
    }

    /// Stops everything (driver shutdown).
    pub(crate) fn shutdown(&mut self) {
        for (_, (_, task)) in self.connecting.drain() {
            task.abort();
        }
        for (_, (_, _, task)) in self.exchanging.drain() {
            task.abort();
        }
        self.ready.clear();
        self.pool.clear();
    }

    /// Connect attempts in flight plus exchanges running (for stats).
    pub(crate) fn in_flight(&self) -> usize {
        self.connecting.len() + self.ready.len() + self.exchanging.len()
    }

    /// Idle keep-alive connections cached.
    pub(crate) fn pooled(&self) -> usize {
        self.pool.len()
    }
}

/// The core's view of a failed short-link connect: a proxy that refused to open the tunnel
/// for a reason other than the target's refusal is a handshake failure.
fn short_dial_error(err: &io::Error) -> DialError {
    match ProxyError::from_io(err) {
        Some(ProxyError::Socks5Reply(3..=5)) | None => dial_error(err),
        Some(_) => DialError::Handshake,
    }
}

//! [`ShortIo`]: what the driver does for the short-link actions (`ShortConnect`,
//! `HttpExchange`, `Abort`), one tokio task per connect attempt and per exchange, results
//! reported back through the driver's channel as [`ShortEvent`]s.
//!
//! The keep-alive pool's decisions (what to keep, for how long, what to reuse, bans) are
//! the core's (`phobos_stn_proto`'s short link, §8.5). The driver only holds the sockets:
//! a connection whose response was reusable stays here, idle, until the core either names
//! it in another `HttpExchange` or aborts it; if the server closes it meanwhile, the core
//! hears it through `handle_closed`.

use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use phobos_plugin_api::IpPort;
use phobos_stn_proto::{
    CloseCause, ConnId, DialError, Engine, ExchangeError, HttpRequest, HttpResponse,
    ShortLinkConfig,
};
use rustc_hash::FxHashMap;
use tokio::task::AbortHandle;
use tracing::{debug, trace, Instrument};

use super::exchange::{H1Conn, Limits};
use super::proxy::ProxyError;
use super::ShortSettings;
use crate::connector::{dial_error, Connector, LinkStream};
use crate::guard;

/// What a short-link IO task reports.
pub(crate) enum ShortEvent {
    /// A connect attempt gave a connection.
    Connected {
        attempt: ConnId,
        conn: Box<dyn LinkStream>,
    },
    /// A connect attempt failed.
    ConnectFailed { attempt: ConnId, error: DialError },
    /// Bytes of a response were read.
    Progress { conn: ConnId, len: usize },
    /// An exchange ended.
    Done {
        conn: ConnId,
        result: Result<HttpResponse, ExchangeError>,
        /// The connection, when the response says it may carry another request.
        keep: Option<H1Conn>,
    },
    /// An idle connection ended (the server closed it).
    IdleClosed { conn: ConnId },
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
    /// The driver's count of panics caught in the connector and its streams.
    panics: Arc<AtomicU64>,
    /// Connect attempts in flight.
    connecting: FxHashMap<ConnId, AbortHandle>,
    /// Connected, waiting for the engine's `HttpExchange`.
    ready: FxHashMap<ConnId, Ready>,
    /// Exchanges running.
    exchanging: FxHashMap<ConnId, AbortHandle>,
    /// Connections kept for the core's keep-alive pool, each with the task watching for
    /// the server closing it.
    idle: FxHashMap<ConnId, (H1Conn, AbortHandle)>,
}

impl ShortIo {
    pub(crate) fn new(
        settings: &ShortSettings,
        config: &ShortLinkConfig,
        sink: Sink,
        panics: Arc<AtomicU64>,
    ) -> Self {
        ShortIo {
            connector: settings.connector(),
            direct: settings.connector_with(false),
            tls: settings.tls.is_some(),
            limits: Limits {
                max_head: config.max_head_len,
                max_body: config.max_response_len,
            },
            sink,
            panics,
            connecting: FxHashMap::default(),
            ready: FxHashMap::default(),
            exchanging: FxHashMap::default(),
            idle: FxHashMap::default(),
        }
    }

    /// Whether anything but this may still report through the sink: a task or a connection
    /// holding a clone of it (see `Driver::io_may_come`).
    pub(crate) fn may_report(&self) -> bool {
        Arc::strong_count(&self.sink) > 1
    }

    /// `Action::ShortConnect`: a new connection through the connector (TLS and the proxy as
    /// configured).
    pub(crate) fn connect(&mut self, attempt: ConnId, addr: IpPort, host: &str, proxy: bool) {
        debug!(conn = %attempt, %addr, host, proxy, tls = self.tls, "short link: connecting");
        let connector = if proxy {
            self.connector.clone()
        } else {
            self.direct.clone()
        };
        let sink = self.sink.clone();
        let panics = self.panics.clone();
        let task = tokio::spawn(
            async move {
                let ev = match guard::connect(&panics, || connector.connect(addr)).await {
                    Ok(stream) => ShortEvent::Connected {
                        attempt,
                        conn: stream,
                    },
                    Err(e) => ShortEvent::ConnectFailed {
                        attempt,
                        error: short_dial_error(&e),
                    },
                };
                sink(ev);
            }
            .in_current_span(),
        );
        self.connecting.insert(attempt, task.abort_handle());
    }

    /// `Action::HttpExchange`: runs the exchange on the connection `conn` (a fresh one, or
    /// an idle one the core chose to reuse) in a task.
    pub(crate) fn exchange(&mut self, conn: ConnId, request: HttpRequest) {
        let ready = if let Some(ready) = self.ready.remove(&conn) {
            ready
        } else if let Some((h1, watch)) = self.idle.remove(&conn) {
            watch.abort();
            debug!(%conn, "short link: reusing a keep-alive connection");
            Ready::Reused(h1)
        } else {
            // Not connected (aborted meanwhile): the engine hears nothing, its timers decide.
            return;
        };
        let limits = self.limits;
        let sink = self.sink.clone();
        let keep_alive = request.wants_keep_alive();
        let task = tokio::spawn(
            async move {
                let progress = sink.clone();
                let mut h1 = match ready {
                    Ready::Reused(h1) => {
                        // §8.5: the server may have closed it while it was idle, and hyper
                        // may not have seen that yet. Nothing is written then.
                        if let Err(cause) = h1.check_idle() {
                            debug!(%conn, ?cause, "short link: the idle connection was closed meanwhile");
                            sink(ShortEvent::Done {
                                conn,
                                result: Err(ExchangeError::NotSent(cause)),
                                keep: None,
                            });
                            return;
                        }
                        h1
                    }
                    Ready::Fresh(stream) => {
                        // Design: a probe costs a descriptor for the connection's life, so
                        // only a connection the core may keep gets one.
                        let probe = if keep_alive { stream.peer_probe() } else { None };
                        match H1Conn::handshake(stream, probe, limits).await {
                            Ok(h1) => h1,
                            Err(e) => {
                                sink(ShortEvent::Done {
                                    conn,
                                    result: Err(e),
                                    keep: None,
                                });
                                return;
                            }
                        }
                    }
                };
                let on_read = Box::new(move |len| progress(ShortEvent::Progress { conn, len }));
                let ev = match h1.exchange(&request, limits, on_read).await {
                    Ok(response) => {
                        let keep = (response.reusable && h1.is_open()).then_some(h1);
                        ShortEvent::Done {
                            conn,
                            result: Ok(response),
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
            }
            .in_current_span(),
        );
        self.exchanging.insert(conn, task.abort_handle());
    }

    /// `Action::Abort`: drops the attempt, the waiting or idle connection, or the exchange.
    /// Returns whether `conn` was a short-link one.
    pub(crate) fn abort(&mut self, conn: ConnId) -> bool {
        if let Some(task) = self.connecting.remove(&conn) {
            task.abort();
            return true;
        }
        if self.ready.remove(&conn).is_some() {
            return true;
        }
        if let Some(task) = self.exchanging.remove(&conn) {
            task.abort();
            return true;
        }
        if let Some((_, watch)) = self.idle.remove(&conn) {
            watch.abort();
            return true;
        }
        false
    }

    /// A report of one of the IO tasks: into the engine (unless the engine gave the
    /// connection up meanwhile).
    pub(crate) fn on_event(&mut self, engine: &mut Engine, t: Instant, ev: ShortEvent) {
        match ev {
            ShortEvent::Connected { attempt, conn } => {
                if self.connecting.remove(&attempt).is_none() {
                    return; // aborted meanwhile: dropping closes it
                }
                self.ready.insert(attempt, Ready::Fresh(conn));
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
                if self.exchanging.remove(&conn).is_none() {
                    return;
                }
                match result {
                    Ok(mut response) => {
                        trace!(%conn, status = response.status, len = response.body.len(), "short link: response");
                        match keep {
                            // Held until the core reuses or aborts it (it aborts at once
                            // what it does not keep).
                            Some(h1) => self.hold_idle(conn, h1),
                            // Closed meanwhile: not reusable after all.
                            None => response.reusable = false,
                        }
                        engine.handle_http_response(t, conn, response);
                    }
                    Err(error) => {
                        debug!(%conn, %error, "short link: exchange failed");
                        engine.handle_http_failed(t, conn, error);
                    }
                }
            }
            ShortEvent::IdleClosed { conn } => {
                if self.idle.remove(&conn).is_some() {
                    debug!(%conn, "short link: idle keep-alive connection closed by the server");
                    engine.handle_closed(t, conn, CloseCause::RemoteClosed);
                }
            }
        }
    }

    /// Keeps `h1` idle for the core, watching for the server closing it.
    fn hold_idle(&mut self, conn: ConnId, h1: H1Conn) {
        let closed = h1.closed();
        let sink = self.sink.clone();
        let watch = tokio::spawn(
            async move {
                closed.await;
                sink(ShortEvent::IdleClosed { conn });
            }
            .in_current_span(),
        );
        self.idle.insert(conn, (h1, watch.abort_handle()));
    }

    /// Stops everything (driver shutdown).
    pub(crate) fn shutdown(&mut self) {
        for (_, task) in self.connecting.drain() {
            task.abort();
        }
        for (_, task) in self.exchanging.drain() {
            task.abort();
        }
        for (_, (_, watch)) in self.idle.drain() {
            watch.abort();
        }
        self.ready.clear();
    }

    /// Connect attempts in flight plus exchanges running (for stats).
    pub(crate) fn in_flight(&self) -> usize {
        self.connecting.len() + self.ready.len() + self.exchanging.len()
    }

    /// Idle keep-alive connections held for the core.
    pub(crate) fn pooled(&self) -> usize {
        self.idle.len()
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

//! The short link (spec §8): one HTTP/1.1 POST per attempt.
//!
//! # Attempt flow
//!
//! A short-link task owns its attempts; nothing is shared with other tasks except the IP
//! ranking and the connect race rules, which are the long link's own
//! ([`Ranking::plan`](super::ranking::Ranking::plan), [`Dialer`]):
//!
//! 1. **Addresses.** Hosts that are IP literals (`"10.0.0.1"`, `"10.0.0.1:8080"`,
//!    `"[::1]:80"`) need no resolution; a list of literals only is used alone, in order (a
//!    debug list). Names walk the IP source chain ([`Action::Resolve`] with
//!    [`LinkPurpose::ShortLink`], the link named `short#<task id>`). The answers are ranked
//!    with the short link's port ([`ShortLinkConfig::port`], or the host's own `:port`).
//! 2. **Switching IP on retry (§8.4).** Addresses that failed earlier attempts of the task
//!    move to the end of the plan, so a retry starts with the next address; failures are
//!    also recorded in the ranking (which bans repeat offenders for every task).
//! 3. **Connect race**: [`Action::ShortConnect`] per started address, the race and
//!    per-attempt connect timeout of the config's profile.
//! 4. **Exchange.** The winner gets [`Action::HttpExchange`] with the request the codec shaped
//!    (`shortlink_headers`, `shortlink_body`; `Host` is the host the winning address came
//!    from). The driver reports every read with
//!    [`Engine::handle_http_progress`], then [`Engine::handle_http_response`] or
//!    [`Engine::handle_http_failed`].
//! 5. **Timeouts** (§6.2): first packet (no response byte yet), packet to packet (bytes
//!    stopped), read/write (whole exchange), all from the moment the request was handed
//!    over, with Mars's formulas; the task total (§6.1) over everything. A timed-out
//!    exchange is [`Action::Abort`]ed and its address recorded as failed.
//! 6. **Outcome.** A complete response goes through the codec's `shortlink_check_response`
//!    (a refused status is [`HttpFailure::Status`]) and the configured
//!    [`ResponseCheck`](crate::ResponseCheck). A failed attempt is retried after
//!    [`Timing::retry_pause`](crate::Timing::retry_pause) while retries remain (Mars's
//!    default fail handle retries every HTTP and socket failure).
//!
//! **Keep-alive pool** (§8.5), decided here, held by the driver:
//!
//! - Only a request that asks for reuse with its own `Connection: Keep-Alive` header (the
//!   codec's default says `close`) may leave its connection behind, and only after a
//!   complete `200` response on a connection the driver found reusable
//!   ([`HttpResponse::reusable`]: HTTP/1.1, neither side said `close`).
//! - Such a connection stays idle for the server's `Keep-Alive: timeout=N` when
//!   `0 < N < 60`, else 5 s; at most [`MAX_IDLE`] are kept (the soonest to expire goes
//!   first), so a server that keeps everything alive cannot make the client hoard sockets.
//! - Before connecting to an address, an idle connection for the same address, `Host` and
//!   proxy choice is used instead: the task's [`Action::HttpExchange`] names the idle
//!   connection, and no [`Action::ShortConnect`] is sent.
//! - A reused connection the driver finds closed before it wrote the request
//!   ([`ExchangeError::NotSent`]: the server closed it while it was idle, the ordinary
//!   keep-alive race) is stale, not failed: the attempt starts over at once on a fresh
//!   connection, and nothing is held against the task's retries, the address or the pool.
//! - A reused connection that gives no response once the request went out (failure or
//!   per-attempt timeout) bans reuse for 5 min and closes every idle connection.
//! - A network change or [`Engine::redo_tasks`] closes every idle connection.
//! - Contract with the driver: after [`Engine::handle_http_response`] the connection stays
//!   the driver's until the core sends [`Action::Abort`] for it (sent at once when it is not
//!   kept; on expiry, eviction or a ban when it is). The driver reports an idle connection
//!   the server closed with [`Engine::handle_closed`].
//!
//! **Proxy** (§8.6): with [`ShortLinkConfig::proxy`] set, attempts go through the driver's
//! proxy ([`Action::ShortConnect`]'s `proxy` flag), except a task's last retry, which flips
//! the last choice that succeeded (through the proxy when nothing has succeeded yet, so the
//! last retry goes direct).
//!
//! **Auth** (§8.1): a task that [`needs_auth`](crate::TaskSpec::needs_auth) waits before each
//! attempt until the [`AuthCheck`](phobos_plugin_api::AuthCheck) says its host (the task's
//! `auth_host`, else its first short-link host) is authenticated, sharing the long link's
//! [`Action::EnsureAuth`] requests; a rejection ends it with
//! [`AuthFailure::Rejected`](crate::AuthFailure::Rejected).
//!
//! **Places** (Phobos): at most [`ShortLinkConfig::max_running`] tasks per host (a task's
//! first short-link host) are in an attempt (steps 1–4) at once. A task that finds no place
//! waits, in (priority, id) order, with its total timeout running; a place passes on to the
//! same host's next task when an attempt ends (the task ended, or waits out its retry pause
//! without one). Per host, so a dead host holding its places does not hold up the others.
//!
//! **Limits** (§13): the frequency and flow limits check a short-link task's first attempt's
//! body once it is built, as on the long link (one count per task).
//!
//! **Zombies** (§14): a short-link task that fails with budget left under its
//! `total_timeout` is kept and started again as a long-link one is; a short-link success
//! restarts every zombie.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use phobos_plugin_api::{
    AddrSource, AuthError, EncodeError, IpPort, LinkPurpose, ResolveError, ResolvedAddr,
    ShortLinkReject, ShortLinkRequest, TaskId,
};
use rustc_hash::FxHashMap;

use super::chain::ChainWalk;
use super::dial::{stagger, DialRules, DialStep, Dialer};
use super::plugins;
use super::ranking::{Answers, Candidate, PlanRules};
use super::timeouts::{self, AttemptTimeouts, NetQuality};
use super::{dial_failure, Engine};
use crate::config::ResponseVerdict;
use crate::error::{
    AuthFailure, CodecFailure, DialFailure, HttpFailure, SocketFailure, TaskError, TimeoutLevel,
};
use crate::io::{Action, CloseCause, ConnId, DialError, Event, LinkName};
use crate::task::{EncodeVia, Response, TaskProfile, TaskSpec};

/// A short-link request, shaped by the codec's
/// [`shortlink_headers`](phobos_plugin_api::PacketCodec::shortlink_headers) and
/// [`shortlink_body`](phobos_plugin_api::PacketCodec::shortlink_body) hooks. The driver
/// writes it as `POST <path> HTTP/1.1`, the headers in this order, then the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// The request target (Mars's `cgi`), e.g. `/cgi-bin/x`.
    pub path: String,
    /// Header names and values, in the order they are written.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl HttpRequest {
    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Whether the request asks to keep its connection (`Connection: Keep-Alive`): only
    /// such an exchange may leave its connection in the keep-alive pool (§8.5).
    pub fn wants_keep_alive(&self) -> bool {
        wants_keep_alive(&self.headers)
    }
}

/// A complete short-link response, as the driver read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in the order received.
    pub headers: Vec<(String, String)>,
    /// The whole body (content length or chunked, de-chunked).
    pub body: Bytes,
    /// The server lets the connection carry another request (HTTP/1.1, no
    /// `Connection: close`, the body read to its end, the connection still open). The core
    /// keeps it (§8.5) only when, besides, the request asked for reuse.
    pub reusable: bool,
}

impl HttpResponse {
    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// Why the driver could not get a complete response on a short-link connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The bytes received are not a valid HTTP/1.x response.
    #[error("{0}")]
    Http(HttpFailure),
    /// The connection closed or failed before the response was complete.
    #[error("connection ended: {0:?}")]
    Closed(CloseCause),
    /// The connection had ended before the request was written: the driver wrote no byte of
    /// it, so the server cannot have acted on it. A driver reports this when it finds a
    /// reused keep-alive connection closed by the server (or holding bytes no request asked
    /// for) before writing, or when its HTTP client gives the request back unsent.
    #[error("connection ended before the request was sent: {0:?}")]
    NotSent(CloseCause),
    /// The request could not be written as given (the codec's headers are not valid
    /// HTTP, or its `Content-Length` does not match the body).
    #[error("request not writable")]
    Request,
}

/// Short-link settings ([`Config::short_link`](crate::Config::short_link)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShortLinkConfig {
    /// The port for hosts that name none (Mars: 80).
    pub port: u16,
    /// Addresses planned per attempt (Mars's `kNumMakeCount`, 5).
    pub max_addrs: usize,
    /// The largest response body accepted (the driver enforces it; default 16 MiB).
    pub max_response_len: usize,
    /// The largest response head (status line and headers; Mars: 128 KiB), exactly. It also
    /// sets how many header lines a head may have: one per 128 bytes of it, at least 100 and
    /// at most 1,024 (the driver enforces both).
    pub max_head_len: usize,
    /// The driver has a proxy for the short link: attempts use it, except that a task's
    /// last retry flips to the opposite of the last choice that succeeded (Mars §8.6: a
    /// broken proxy, or a network that only works through one, still gets one try the other
    /// way). Set by the driver's config; default off.
    pub proxy: bool,
    /// Tasks per host (a task's first short-link host) in an attempt (resolving, connecting
    /// or exchanging) at once; the others wait for a place in priority order, their total
    /// timeouts running (default 16).
    ///
    /// Design: Mars runs every short-link task at once (a thread each). A burst of
    /// thousands then opens thousands of sockets (three per racing attempt) and, under a
    /// 1,024-descriptor limit, fails most of its tasks: 257 of 3,000 succeeded that way.
    /// Per host, as browsers count, so a host that does not answer holds up only its own
    /// tasks.
    pub max_running: usize,
    /// Connect timeouts per address family, `(IPv4, IPv6)`, used in place of
    /// [`Timing::connect_timeout`](crate::Timing::connect_timeout) for every address of an
    /// attempt whose list holds an IPv6 address (Mars's `SetIpConnectTimeout`, spec §8.4;
    /// default none). Both must be above zero.
    ///
    /// Design: on a dual-stack network whose IPv6 path is broken, an app that knows its
    /// users' networks can give IPv6 a shorter leash than IPv4 (or the other way round);
    /// a list of IPv4 addresses alone keeps the one timeout, as in Mars.
    pub family_connect_timeouts: Option<(Duration, Duration)>,
}

impl Default for ShortLinkConfig {
    fn default() -> Self {
        ShortLinkConfig {
            port: 80,
            max_addrs: 5,
            max_response_len: 16 * 1024 * 1024,
            max_head_len: 128 * 1024,
            proxy: false,
            max_running: 16,
            family_connect_timeouts: None,
        }
    }
}

impl ShortLinkConfig {
    /// Sets [`port`](Self::port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets [`max_addrs`](Self::max_addrs).
    pub fn max_addrs(mut self, n: usize) -> Self {
        self.max_addrs = n;
        self
    }

    /// Sets [`max_head_len`](Self::max_head_len).
    pub fn max_head_len(mut self, len: usize) -> Self {
        self.max_head_len = len;
        self
    }

    /// Sets [`max_response_len`](Self::max_response_len).
    pub fn max_response_len(mut self, len: usize) -> Self {
        self.max_response_len = len;
        self
    }

    /// Sets [`max_running`](Self::max_running).
    pub fn max_running(mut self, n: usize) -> Self {
        self.max_running = n;
        self
    }

    /// Sets [`family_connect_timeouts`](Self::family_connect_timeouts) to `(ipv4, ipv6)`.
    pub fn family_connect_timeouts(mut self, ipv4: Duration, ipv6: Duration) -> Self {
        self.family_connect_timeouts = Some((ipv4, ipv6));
        self
    }
}

/// The short link's state inside the [`Engine`].
#[derive(Debug, Default)]
pub(super) struct ShortLink {
    tasks: BTreeMap<TaskId, ShortTask>,
    /// Connect attempts and exchanges, by connection.
    conns: FxHashMap<ConnId, TaskId>,
    timers: ShortTimers,
    /// Exchanges in progress (the queue position of §6.2's formula).
    exchanging: usize,
    /// Whether the last successful exchange went through the proxy (§8.6).
    last_proxy_ok: Option<bool>,
    /// The [`ShortLinkConfig::max_running`] places of each host with tasks in an attempt
    /// or waiting for one (an entry goes when neither is left).
    places: FxHashMap<String, Places>,
    /// Hosts with a place freed and not yet handed on ([`Engine::short_promote`]).
    freed: Vec<String>,
    /// A place is being handed on; places freed meanwhile are handed on by the same loop.
    promoting: bool,
    /// Idle keep-alive connections (§8.5).
    pool: KeepAlivePool,
}

/// One host's places.
#[derive(Debug, Default)]
struct Places {
    /// Tasks holding a place.
    running: usize,
    /// Tasks waiting for one, by (priority, id).
    queued: BTreeSet<(u8, TaskId)>,
}

/// Idle keep-alive connections the driver holds for the core (§8.5).
#[derive(Debug, Default)]
struct KeepAlivePool {
    idle: Vec<IdleConn>,
    /// Reuse is off until then (a reused connection failed).
    banned_until: Option<Instant>,
}

/// One idle connection and what it is good for.
#[derive(Debug)]
struct IdleConn {
    conn: ConnId,
    addr: IpPort,
    host: String,
    proxy: bool,
    expires: Instant,
}

impl KeepAlivePool {
    fn is_banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|t| now < t)
    }

    /// Takes the idle connection for (`addr`, `host`, `proxy`), if reuse is allowed.
    fn take(&mut self, addr: IpPort, host: &str, proxy: bool, now: Instant) -> Option<ConnId> {
        if self.is_banned(now) {
            return None;
        }
        let pos = self.idle.iter().position(|i| {
            i.addr == addr && i.host == host && i.proxy == proxy && i.expires > now
        })?;
        Some(self.idle.swap_remove(pos).conn)
    }

    /// Forgets `conn`; whether it was idle here.
    fn remove(&mut self, conn: ConnId) -> bool {
        match self.idle.iter().position(|i| i.conn == conn) {
            Some(pos) => {
                self.idle.swap_remove(pos);
                true
            }
            None => false,
        }
    }

    fn holds(&self, conn: ConnId) -> bool {
        self.idle.iter().any(|i| i.conn == conn)
    }
}

impl ShortLink {
    /// Whether `id` is a short-link task.
    pub(super) fn has(&self, id: TaskId) -> bool {
        self.tasks.contains_key(&id)
    }

    /// Whether `conn` belongs to a short-link attempt or is an idle keep-alive connection.
    pub(super) fn owns(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn) || self.pool.holds(conn)
    }

    /// Short-link tasks in the engine.
    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// The earliest short-link deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.next().map(|(at, _)| at)
    }
}

#[derive(Debug)]
pub(super) struct ShortTask {
    spec: TaskSpec,
    /// The starter's tag ([`TaskEnd::tag`](crate::TaskEnd::tag)).
    pub(super) tag: u64,
    /// When the current budget started (admission, or a zombie restart).
    budget_start: Instant,
    retries_left: u32,
    /// Attempts broken by damaged bytes that were repeated without spending a retry
    /// ([`Recovery::damaged_reconnects`](crate::Recovery::damaged_reconnects)).
    damaged_retries: u32,
    attempts: u32,
    pub(super) profile: TaskProfile,
    state: State,
    /// Addresses that failed earlier attempts: tried last.
    failed: Vec<IpPort>,
    /// Which host each resolved IP came from (for the `Host` header).
    ip_hosts: Vec<(IpAddr, usize)>,
    /// The current attempt handed its request over (else it failed while connecting).
    sent: bool,
    /// The auth plugin reported success for this attempt's host.
    auth_passed: bool,
    /// Whether this attempt goes through the driver's proxy.
    use_proxy: bool,
    /// The task holds one of the [`ShortLinkConfig::max_running`] places (from the start
    /// of an attempt to its end).
    holds_place: bool,
    /// The anti-avalanche limits have seen the task (on its first attempt's request).
    limits_checked: bool,
}

#[derive(Debug)]
enum State {
    /// Waiting for the retry pause.
    Waiting,
    /// Waiting for a place ([`ShortLinkConfig::max_running`]).
    Queued,
    /// Waiting for the auth check to pass for this host.
    WaitingAuth { host: String },
    /// Walking the IP source chain.
    Resolving {
        walk: ChainWalk,
        /// The name hosts being walked, as indexes into the task's host list.
        names: Vec<usize>,
        /// Literal addresses per host.
        literal: Vec<Vec<ResolvedAddr>>,
    },
    /// Racing connects.
    Connecting { dialer: Dialer, started: Instant },
    /// The request is with the driver.
    Exchanging(Exchange),
}

#[derive(Clone, Copy, Debug)]
struct Exchange {
    conn: ConnId,
    addr: IpPort,
    sent_at: Instant,
    timeouts: AttemptTimeouts,
    last_progress: Option<Instant>,
    received: usize,
    sent_len: usize,
    /// The connection came from the keep-alive pool.
    reused: bool,
    /// The request asked to keep the connection (`Connection: Keep-Alive`).
    keep_alive: bool,
}

/// The short link's timers (kept apart from the long link's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    /// The task's whole budget (§6.1).
    Total(TaskId),
    /// The retry pause after a failed attempt (1 s).
    Retry(TaskId),
    /// The IP source call in flight takes too long.
    Resolve(TaskId),
    /// The race may start its next address.
    RaceStep(TaskId),
    /// One connect attempt's own timeout.
    Connect(ConnId),
    /// No response byte within the first-packet timeout.
    FirstPacket(TaskId),
    /// Response bytes stopped for the packet-to-packet timeout.
    PacketToPacket(TaskId),
    /// The exchange's read/write budget ends.
    ReadWrite(TaskId),
    /// An idle keep-alive connection expires.
    Idle(ConnId),
}

#[derive(Debug, Default)]
struct ShortTimers {
    by_kind: FxHashMap<Timer, Instant>,
    order: BTreeSet<(Instant, Timer)>,
}

impl ShortTimers {
    fn set(&mut self, kind: Timer, at: Instant) {
        if let Some(old) = self.by_kind.insert(kind, at) {
            self.order.remove(&(old, kind));
        }
        self.order.insert((at, kind));
    }

    fn cancel(&mut self, kind: Timer) {
        if let Some(old) = self.by_kind.remove(&kind) {
            self.order.remove(&(old, kind));
        }
    }

    fn next(&self) -> Option<(Instant, Timer)> {
        self.order.first().copied()
    }

    fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let (at, kind) = self.next()?;
        if at > now {
            return None;
        }
        self.order.remove(&(at, kind));
        self.by_kind.remove(&kind);
        Some(kind)
    }
}

impl Engine {
    /// Idle short-link keep-alive connections the core keeps now (§8.5).
    pub fn short_link_idle(&self) -> usize {
        self.short.pool.idle.len()
    }

    // ----- inputs from the driver (public) -------------------------------------------------

    /// Bytes of a short-link response arrived on `conn` (answer to
    /// [`Action::HttpExchange`]; call once per read, with its length). Restarts the
    /// packet-to-packet timer and stops the first-packet one.
    pub fn handle_http_progress(&mut self, now: Instant, conn: ConnId, len: usize) {
        self.demote_all();
        let Some(id) = self.short_exchange_of(conn) else {
            return;
        };
        let Some(task) = self.short.tasks.get_mut(&id) else {
            return;
        };
        let State::Exchanging(ex) = &mut task.state else {
            return;
        };
        ex.last_progress = Some(now);
        ex.received += len;
        task.profile.first_byte.get_or_insert(now);
        task.profile.last_byte = Some(now);
        task.profile.received_bytes = ex.received;
        self.stats.bytes_received += len as u64;
        let p2p = ex.timeouts.packet_to_packet;
        self.short.timers.cancel(Timer::FirstPacket(id));
        self.short.timers.set(Timer::PacketToPacket(id), now + p2p);
        // §7.11: the signalling keeper hears short-link traffic too.
        self.data_event(now);
    }

    /// A complete short-link response arrived on `conn` (answer to
    /// [`Action::HttpExchange`]). The driver keeps the connection (if it is still usable)
    /// until an [`Action::Abort`] for it: the core sends one at once unless it keeps the
    /// connection in its keep-alive pool (see the module docs).
    pub fn handle_http_response(&mut self, now: Instant, conn: ConnId, response: HttpResponse) {
        self.demote_all();
        let Some(id) = self.short_exchange_of(conn) else {
            // Canceled or timed out meanwhile: the connection is not wanted.
            self.actions.push_back(Action::Abort { attempt: conn });
            return;
        };
        let Some(ex) = self.short_end_exchange(id, conn) else {
            self.actions.push_back(Action::Abort { attempt: conn });
            return;
        };
        let keep = (ex.keep_alive && response.reusable && response.status == 200)
            .then(|| keep_alive_timeout(response.header("keep-alive")));
        let (host, proxy) = match self.short.tasks.get(&id) {
            Some(t) => (host_for(t, ex.addr), t.use_proxy),
            None => (String::new(), false),
        };
        self.short_release(now, conn, (ex.addr, host, proxy), keep);
        let check = plugins::shortlink_check_response(
            &*self.cfg.codec,
            response.status,
            &response.headers,
            &response.body,
            &self.caught,
        );
        if let Err(reject) = check {
            let failure = match reject {
                ShortLinkReject::Status(s) => HttpFailure::Status(s),
                ShortLinkReject::Other(code) => HttpFailure::Rejected(code),
                _ => HttpFailure::Rejected(u32::MAX),
            };
            // A server error or a malformed answer blames the address; a client error
            // (4xx) or a codec refusal does not.
            let blame = !matches!(failure, HttpFailure::Status(s) if s < 500);
            self.short_record(now, id, ex.addr, !blame, None);
            self.short_failed(id, now, failure.into());
            return;
        }
        self.short_record(now, id, ex.addr, true, None);
        let Some(cmd_id) = self.short.tasks.get(&id).map(|t| t.spec.cmd_id) else {
            // Its exchange was found, so the task is there; nothing to end otherwise.
            return;
        };
        let verdict = match &self.cfg.response_check {
            Some(check) => check.check(id, cmd_id, &response.body),
            None => ResponseVerdict::Accept,
        };
        match verdict {
            ResponseVerdict::Retry { code } => {
                self.short_failed(id, now, CodecFailure::Response { code }.into());
            }
            ResponseVerdict::End { code } => {
                self.short_finish(id, now, Err(TaskError::Server { code }));
            }
            _ => {
                let cost = now.saturating_duration_since(ex.sent_at);
                let size = ex.sent_len + response.body.len();
                self.estimator
                    .record(now, self.net.is_mobile(), size, Some(cost));
                if let Some(t) = self.short.tasks.get_mut(&id) {
                    t.profile.decoded_at = Some(now);
                    if self.cfg.short_link.proxy {
                        self.short.last_proxy_ok = Some(t.use_proxy);
                    }
                }
                let response = Response {
                    cmd_id,
                    body: response.body,
                    extension: None,
                };
                self.short_finish(id, now, Ok(response));
                // §14: any network success, long or short, restarts the zombies.
                if !self.zombies.is_empty() {
                    self.restart_all_zombies(now);
                }
            }
        }
    }

    /// The short-link exchange on `conn` failed (answer to [`Action::HttpExchange`]). The
    /// connection is the driver's to drop.
    pub fn handle_http_failed(&mut self, now: Instant, conn: ConnId, error: ExchangeError) {
        self.demote_all();
        let Some(id) = self.short_exchange_of(conn) else {
            return;
        };
        let Some(ex) = self.short_end_exchange(id, conn) else {
            return;
        };
        if ex.reused && matches!(error, ExchangeError::NotSent(_)) {
            // Counted as sent when it was handed over; it never left.
            self.stats.requests_sent = self.stats.requests_sent.saturating_sub(1);
            self.stats.bytes_sent = self.stats.bytes_sent.saturating_sub(ex.sent_len as u64);
            self.short_stale(id, now);
            return;
        }
        let error = match error {
            ExchangeError::Http(h) => TaskError::Http(h),
            ExchangeError::Closed(cause) | ExchangeError::NotSent(cause) => match cause {
                CloseCause::Io(errno) => SocketFailure::Io { errno }.into(),
                CloseCause::Damaged => SocketFailure::Damaged.into(),
                _ => SocketFailure::RemoteClosed.into(),
            },
            ExchangeError::Request => {
                // The codec shaped a request HTTP cannot carry: no retry can fix that.
                let e = CodecFailure::Encode(EncodeError::Other(SHORT_REQUEST_INVALID));
                self.short_finish(id, now, Err(e.into()));
                return;
            }
        };
        if ex.reused {
            self.short_ban_pool(now);
        }
        self.estimator.record(now, self.net.is_mobile(), 0, None);
        self.short_record(now, id, ex.addr, false, None);
        self.short_failed(id, now, error);
    }

    // ----- hooks called by the engine ------------------------------------------------------

    /// Admits a short-link task (already validated) and starts its first attempt.
    pub(super) fn short_start(
        &mut self,
        now: Instant,
        id: TaskId,
        tag: u64,
        spec: TaskSpec,
        profile: TaskProfile,
    ) {
        let retries = spec.retry_count.unwrap_or(super::DEFAULT_RETRIES);
        self.short_launch(
            id,
            ShortTask {
                spec,
                tag,
                budget_start: now,
                retries_left: retries,
                damaged_retries: 0,
                attempts: 0,
                profile,
                state: State::Waiting,
                failed: Vec::new(),
                ip_hosts: Vec::new(),
                sent: false,
                auth_passed: false,
                use_proxy: false,
                holds_place: false,
                limits_checked: false,
            },
            now,
        );
    }

    /// Keeps `task` as task `id`, arms its total timeout (for its spec and the retries it
    /// has left) and begins its attempt: at admission and at a zombie's restart.
    fn short_launch(&mut self, id: TaskId, task: ShortTask, now: Instant) {
        let spec = &task.spec;
        let total = timeouts::task_total(
            spec.server_cost,
            task.retries_left,
            spec.long_polling,
            spec.total_timeout,
        );
        self.short.tasks.insert(id, task);
        self.short.timers.set(Timer::Total(id), now + total);
        self.short_begin(id, now);
    }

    /// Starts zombie `task` (task `id`) again with `left` of its budget and no retries
    /// (§14), as the long link restarts its zombies.
    pub(super) fn short_restart(
        &mut self,
        id: TaskId,
        mut task: ShortTask,
        left: Duration,
        now: Instant,
    ) {
        task.retries_left = 0;
        task.spec.retry_count = Some(0);
        task.spec.total_timeout = Some(left);
        task.budget_start = now;
        task.state = State::Waiting;
        task.holds_place = false;
        task.sent = false;
        task.auth_passed = false;
        self.short_launch(id, task, now);
    }

    /// Cancels a short-link task; `false` when it is not one.
    pub(super) fn short_cancel(&mut self, now: Instant, id: TaskId) -> bool {
        if !self.short.has(id) {
            return false;
        }
        self.short_finish(id, now, Err(TaskError::Canceled));
        true
    }

    /// An answer of the IP source chain for a short-link task (its link is `short#<id>`).
    /// Returns `false` when `link` is not a short-link name.
    pub(super) fn short_resolved(
        &mut self,
        now: Instant,
        link: &str,
        host: &str,
        source: usize,
        result: Result<Vec<ResolvedAddr>, ResolveError>,
    ) -> bool {
        let Some(id) = parse_link_name(link) else {
            return false;
        };
        let Some(task) = self.short.tasks.get_mut(&id) else {
            return true;
        };
        let State::Resolving { walk, .. } = &mut task.state else {
            return true;
        };
        if !walk.is_current(host, source) {
            return true;
        }
        walk.answer(result.unwrap_or_default());
        self.short.timers.cancel(Timer::Resolve(id));
        self.short_walk(id, now);
        true
    }

    /// A short-link connect attempt succeeded.
    pub(super) fn short_connected(&mut self, now: Instant, conn: ConnId) {
        self.short_won(now, conn, false);
    }

    /// `conn` (a fresh connection, or an idle one taken from the pool when `reused`) wins
    /// its task's race: the others are aborted and the request goes out on it.
    fn short_won(&mut self, now: Instant, conn: ConnId, reused: bool) {
        let Some(&id) = self.short.conns.get(&conn) else {
            return;
        };
        self.short.timers.cancel(Timer::Connect(conn));
        let Some(task) = self.short.tasks.get_mut(&id) else {
            return;
        };
        let State::Connecting { dialer, started } = &mut task.state else {
            self.short.conns.remove(&conn);
            self.actions.push_back(Action::Abort { attempt: conn });
            return;
        };
        let started = *started;
        let Some(winner) = dialer.won(now, conn) else {
            self.short.conns.remove(&conn);
            self.actions.push_back(Action::Abort { attempt: conn });
            return;
        };
        let losers = dialer.abort_all(now);
        self.short.timers.cancel(Timer::RaceStep(id));
        for l in losers {
            self.short.conns.remove(&l.conn);
            self.short.timers.cancel(Timer::Connect(l.conn));
            self.actions.push_back(Action::Abort { attempt: l.conn });
        }
        if !reused {
            let rtt = now.saturating_duration_since(winner.started);
            self.short_record(now, id, winner.addr, true, Some(rtt));
        }
        self.short_send(id, conn, winner.addr, started, now, reused);
    }

    /// A short-link connect attempt failed (or the connection closed before the exchange).
    pub(super) fn short_connect_failed(
        &mut self,
        now: Instant,
        conn: ConnId,
        error: Option<DialError>,
    ) {
        if self.short.pool.remove(conn) {
            // An idle keep-alive connection closed (the server's idle timeout, most often).
            self.short.timers.cancel(Timer::Idle(conn));
            return;
        }
        let Some(id) = self.short.conns.remove(&conn) else {
            return;
        };
        self.short.timers.cancel(Timer::Connect(conn));
        let Some(task) = self.short.tasks.get_mut(&id) else {
            return;
        };
        match &mut task.state {
            State::Connecting { dialer, .. } => {
                if let Some(a) = dialer.failed(now, conn, error) {
                    self.stats.connects_failed += 1;
                    self.short_record(now, id, a.addr, false, None);
                    self.short_advance(id, now);
                }
            }
            State::Exchanging(ex) if ex.conn == conn => {
                // The driver lost the connection before it could report the exchange.
                let cause = match error {
                    Some(DialError::Io(errno)) => CloseCause::Io(errno),
                    Some(DialError::Damaged) => CloseCause::Damaged,
                    _ => CloseCause::RemoteClosed,
                };
                // Design: a reused connection reported closed here was still idle in the
                // driver (it reports such closes only for connections it holds idle): the
                // exchange the engine chose on it, in the same batch of inputs, was not
                // carried out, and no byte of the request left. As a stale connection found
                // at the write, it costs no retry, no ban and no blame.
                let error = match ex.reused {
                    true => ExchangeError::NotSent(cause),
                    false => ExchangeError::Closed(cause),
                };
                self.short.conns.insert(conn, id);
                self.handle_http_failed(now, conn, error);
            }
            _ => {}
        }
    }

    /// Fires the short link's due timers.
    pub(super) fn short_timeouts(&mut self, now: Instant) {
        while let Some(kind) = self.short.timers.pop_due(now) {
            match kind {
                Timer::Total(id) => {
                    self.short_finish(id, now, Err(TaskError::Timeout(TimeoutLevel::Total)));
                }
                Timer::Retry(id) => self.short_begin(id, now),
                Timer::Resolve(id) => {
                    if let Some(ShortTask {
                        state: State::Resolving { walk, .. },
                        ..
                    }) = self.short.tasks.get_mut(&id)
                    {
                        if let Some((host, source)) = walk.in_flight() {
                            self.actions.push_back(Action::CancelResolve {
                                link: link_name(id),
                                host,
                                source,
                            });
                        }
                        walk.answer(Vec::new());
                        self.short_walk(id, now);
                    }
                }
                Timer::RaceStep(id) => self.short_advance(id, now),
                Timer::Connect(conn) => {
                    self.short_connect_failed(now, conn, None);
                    self.actions.push_back(Action::Abort { attempt: conn });
                }
                Timer::FirstPacket(id) => {
                    self.short_attempt_timeout(id, TimeoutLevel::FirstPacket, now)
                }
                Timer::PacketToPacket(id) => {
                    self.short_attempt_timeout(id, TimeoutLevel::PacketToPacket, now)
                }
                Timer::ReadWrite(id) => {
                    self.short_attempt_timeout(id, TimeoutLevel::ReadWrite, now)
                }
                Timer::Idle(conn) => {
                    if self.short.pool.remove(conn) {
                        self.actions.push_back(Action::Abort { attempt: conn });
                    }
                }
            }
        }
    }

    /// Ends every short-link task with `error` (engine reset).
    pub(super) fn short_end_all(&mut self, now: Instant, error: TaskError) {
        let ids: Vec<TaskId> = self.short.tasks.keys().copied().collect();
        for id in ids {
            self.short_finish(id, now, Err(error.clone()));
        }
    }

    /// Interrupts every attempt in progress (network change, redo): each counts as failed
    /// with `error` and is retried if the task may. Idle keep-alive connections are closed.
    pub(super) fn short_interrupt(&mut self, now: Instant, error: TaskError) {
        self.short_clear_pool();
        let ids: Vec<TaskId> = self
            .short
            .tasks
            .iter()
            .filter(|(_, t)| {
                !matches!(
                    t.state,
                    State::Waiting | State::Queued | State::WaitingAuth { .. }
                )
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.short_drop_attempt(id, now);
            self.short_failed(id, now, error.clone());
        }
    }

    // ----- the attempt ---------------------------------------------------------------------

    /// The driver ran the auth check for `host`: waiting short-link tasks go on, end
    /// (rejected) or ask again after [`Timing::auth_retry`](crate::Timing::auth_retry).
    pub(super) fn short_auth(&mut self, now: Instant, host: &str, result: &Result<(), AuthError>) {
        let waiting: Vec<TaskId> = self
            .short
            .tasks
            .iter()
            .filter(|(_, t)| matches!(&t.state, State::WaitingAuth { host: h } if h == host))
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            match result {
                Ok(()) => {
                    if let Some(t) = self.short.tasks.get_mut(&id) {
                        t.auth_passed = true;
                    }
                    self.short_begin(id, now);
                }
                Err(AuthError::Rejected(reason)) => {
                    let error = AuthFailure::Rejected(reason.clone()).into();
                    self.short_finish(id, now, Err(error));
                }
                Err(_) => {
                    let at = now + self.cfg.timing.auth_retry;
                    self.short.timers.set(Timer::Retry(id), at);
                }
            }
        }
    }

    /// Starts an attempt: wait for auth if needed, resolve the names (if any), then race.
    fn short_begin(&mut self, id: TaskId, now: Instant) {
        let port = self.cfg.short_link.port;
        let Some(task) = self.short.tasks.get_mut(&id) else {
            return;
        };
        if task.spec.needs_auth && !std::mem::take(&mut task.auth_passed) {
            let host = match &task.spec.auth_host {
                Some(h) => h.clone(),
                None => task.spec.short_hosts.first().cloned().unwrap_or_default(),
            };
            let log = &self.caught;
            let authed = self
                .cfg
                .auth
                .as_ref()
                .is_none_or(|a| plugins::is_authed(&**a, &host, log));
            if !authed {
                task.state = State::WaitingAuth { host: host.clone() };
                self.request_auth(now, &host);
                return;
            }
        }
        if !task.holds_place {
            let places = self.short.places.entry(place_host(task)).or_default();
            if places.running >= self.cfg.short_link.max_running {
                task.state = State::Queued;
                places.queued.insert((task.spec.priority, id));
                return;
            }
            task.holds_place = true;
            places.running += 1;
        }
        // The attempt's request, built now if the task has an encoder (Mars's `Req2Buf`,
        // with the first host). An attempt begun again because its keep-alive connection was
        // stale (`short_stale`) is built again.
        if task.spec.encoder.is_some() {
            let host = task.spec.short_hosts.first().cloned().unwrap_or_default();
            let via = EncodeVia::ShortLink { host: &host };
            if let Err(error) = task.spec.build_request(id, task.attempts + 1, via) {
                self.short_finish(id, now, Err(error));
                return;
            }
        }
        // §13: the limits are checked after the request is built, on both links; as on the
        // long link, a task counts once, with its first attempt's body.
        if !task.limits_checked {
            task.limits_checked = true;
            let (freq, flow) = super::limits_of(&self.cfg, self.net, &task.spec);
            if freq || flow {
                let body = task.spec.body.clone();
                if let Some((kind, param)) = self.check_limits(now, &body, freq, flow) {
                    self.note_limited(id, kind, param);
                    self.short_finish(id, now, Err(TaskError::Limited(kind)));
                    return;
                }
            }
        }
        let Some(task) = self.short.tasks.get_mut(&id) else {
            return;
        };
        task.sent = false;
        task.use_proxy = if !self.cfg.short_link.proxy {
            false
        } else if task.retries_left == 0
            && task.spec.retry_count.unwrap_or(super::DEFAULT_RETRIES) > 0
        {
            // §8.6: the last retry of a task that has retries (`remain == 0 && retry_count >
            // 0`) flips the last choice that worked (proxy first). A task without retries (a
            // zombie's restart among them) and the free repeat of its attempt keep the proxy.
            !self.short.last_proxy_ok.unwrap_or(true)
        } else {
            true
        };
        let mut literal: Vec<Vec<ResolvedAddr>> = Vec::new();
        let mut names: Vec<usize> = Vec::new();
        let mut name_hosts: Vec<String> = Vec::new();
        for (i, host) in task.spec.short_hosts.iter().enumerate() {
            match parse_host(host) {
                HostSpec::Addr(ip, p) => literal.push(vec![ResolvedAddr {
                    ip,
                    port: Some(p.unwrap_or(port)),
                    source: AddrSource::Debug,
                }]),
                HostSpec::Name(name, _) => {
                    literal.push(Vec::new());
                    names.push(i);
                    name_hosts.push(name.to_owned());
                }
            }
        }
        task.state = State::Resolving {
            walk: ChainWalk::new(name_hosts),
            names,
            literal,
        };
        self.short_walk(id, now);
    }

    /// Asks the next IP source, or plans and starts the race when the walk is over.
    fn short_walk(&mut self, id: TaskId, now: Instant) {
        let sources = self.sources();
        let Some(task) = self.short.tasks.get_mut(&id) else {
            return;
        };
        let State::Resolving {
            walk,
            names,
            literal,
        } = &mut task.state
        else {
            return;
        };
        if let Some((host, source)) = walk.next_call(&sources) {
            self.actions.push_back(Action::Resolve {
                link: link_name(id),
                host,
                source,
                purpose: LinkPurpose::ShortLink,
            });
            self.short
                .timers
                .set(Timer::Resolve(id), now + sources[source].limit);
            return;
        }
        // Merge: literal hosts keep their place among the resolved ones.
        let found = walk.answers();
        let default_port = self.cfg.short_link.port;
        let mut per_host = std::mem::take(literal);
        for (k, &host_index) in names.iter().enumerate() {
            let explicit = match parse_host(&task.spec.short_hosts[host_index]) {
                HostSpec::Name(_, p) => p,
                HostSpec::Addr(..) => None,
            };
            per_host[host_index] = found.hosts[k]
                .iter()
                .map(|a| ResolvedAddr {
                    port: a.port.or(explicit),
                    ..*a
                })
                .collect();
        }
        task.ip_hosts = per_host
            .iter()
            .enumerate()
            .flat_map(|(h, list)| list.iter().map(move |a| (a.ip, h)))
            .collect();
        let all_literal = names.is_empty();
        let answers = if all_literal {
            // Literal addresses only: a debug list, used alone and in order.
            Answers {
                debug: per_host.into_iter().flatten().collect(),
                ..Answers::default()
            }
        } else {
            for list in &mut per_host {
                for a in list.iter_mut() {
                    if a.source == AddrSource::Debug {
                        a.source = AddrSource::NewDns;
                    }
                }
            }
            Answers {
                hosts: per_host,
                backups: found.backups.clone(),
                debug: found.debug.clone(),
            }
        };
        let rules = PlanRules {
            profile: self.cfg.connect_profile,
            ports: std::slice::from_ref(&default_port),
            room: self.cfg.short_link.max_addrs,
            active: self.activity.active,
        };
        let mut candidates: Vec<Candidate> = self.ranking.plan(&answers, rules, now, &mut self.rng);
        // §8.4: addresses that failed this task's earlier attempts go last.
        candidates.sort_by_key(|c| task.failed.contains(&c.addr));
        if candidates.is_empty() {
            task.state = State::Waiting;
            self.short_failed(id, now, DialFailure::NoAddress.into());
            return;
        }
        task.state = State::Connecting {
            dialer: Dialer::new(candidates, DialRules::for_config(&self.cfg)),
            started: now,
        };
        self.short_advance(id, now);
    }

    /// Starts what the race allows now and arms its next step.
    fn short_advance(&mut self, id: TaskId, now: Instant) {
        loop {
            let Some(task) = self.short.tasks.get_mut(&id) else {
                return;
            };
            let State::Connecting { dialer, .. } = &mut task.state else {
                return;
            };
            match dialer.step(now) {
                DialStep::Start(addr) => {
                    let delay = stagger(&self.cfg, self.ranking.rtt(&addr), self.srtt);
                    let host = host_of(&task.ip_hosts, &task.spec.short_hosts, addr);
                    if let Some(idle) = self.short.pool.take(addr, &host, task.use_proxy, now) {
                        // §8.5: an idle connection to this address and host replaces the
                        // connect.
                        self.short.timers.cancel(Timer::Idle(idle));
                        dialer.started(now, idle, delay);
                        self.short.conns.insert(idle, id);
                        self.short_won(now, idle, true);
                        return;
                    }
                    let conn = ConnId(self.next_conn);
                    self.next_conn += 1;
                    let origin = dialer.started(now, conn, delay);
                    self.stats.connects_started += 1;
                    self.short.conns.insert(conn, id);
                    let timeout = short_connect_timeout(&self.cfg, dialer.has_ipv6(), addr);
                    self.short
                        .timers
                        .set(Timer::Connect(conn), origin + timeout);
                    self.actions.push_back(Action::ShortConnect {
                        task: id,
                        attempt: conn,
                        addr,
                        host,
                        proxy: task.use_proxy,
                    });
                }
                DialStep::WaitUntil(at) => {
                    self.short.timers.set(Timer::RaceStep(id), at);
                    return;
                }
                DialStep::Idle => {
                    self.short.timers.cancel(Timer::RaceStep(id));
                    return;
                }
                DialStep::Exhausted => {
                    let error = match dialer.last_error() {
                        None => TaskError::Timeout(TimeoutLevel::Connect),
                        Some(e) => TaskError::Dial(dial_failure(e)),
                    };
                    task.state = State::Waiting;
                    self.short.timers.cancel(Timer::RaceStep(id));
                    self.estimator.record(now, self.net.is_mobile(), 0, None);
                    self.short_failed(id, now, error);
                    return;
                }
            }
        }
    }

    /// Hands the request to the driver on the winning connection and arms the timeouts.
    fn short_send(
        &mut self,
        id: TaskId,
        conn: ConnId,
        addr: IpPort,
        started: Instant,
        now: Instant,
        reused: bool,
    ) {
        let excellent = self.estimator.quality() == NetQuality::Excellent;
        let mobile = self.net.is_mobile();
        let ahead = self.short.exchanging;
        let codec = self.cfg.codec.clone();
        let Some(task) = self.short.tasks.get_mut(&id) else {
            return;
        };
        let host = host_for(task, addr);
        let spec = &task.spec;
        let req = ShortLinkRequest {
            path: &spec.path,
            host: &host,
            body: &spec.body,
            task_headers: &spec.headers,
        };
        let mut headers = Vec::new();
        plugins::shortlink_headers(&*codec, &req, &mut headers, &self.caught);
        let mut body = Vec::with_capacity(spec.body.len());
        plugins::shortlink_body(&*codec, &req, &mut body, &self.caught);
        // The body built is what goes out: a `Content-Length` that counts something else (the
        // default header counts the task's body, which a codec's `shortlink_body` may wrap,
        // or a task header) is made to count it. Before, a longer one left the server
        // waiting for bytes that never came, and a shorter one cut the body without an error.
        let len = body.len().to_string();
        for (name, value) in &mut headers {
            if name.eq_ignore_ascii_case("content-length") && *value != len {
                value.clone_from(&len);
            }
        }
        let mut t = timeouts::attempt(
            &self.cfg.timing,
            mobile,
            spec.server_cost,
            spec.long_polling,
            spec.body.len(),
            ahead,
            excellent,
        );
        if let Some(rec) = self.cfg.active_recovery() {
            if rec.short_attempt_share && spec.long_polling.is_none() {
                // What is left of the task's budget, shared by the attempts it still has.
                let total_at = self.short.timers.by_kind.get(&Timer::Total(id)).copied();
                if let Some(total_at) = total_at {
                    let left = total_at.saturating_duration_since(now);
                    let pauses = self.cfg.timing.retry_pause * task.retries_left;
                    let share = left.saturating_sub(pauses) / (task.retries_left + 1);
                    let cap = share.max(rec.min_attempt);
                    t.first_packet = t.first_packet.min(cap);
                    t.read_write = t.read_write.min(cap);
                }
            }
        }
        let sent_len = body.len();
        let keep_alive = wants_keep_alive(&headers);
        let request = HttpRequest {
            path: spec.path.clone(),
            headers,
            body: Bytes::from(body),
        };
        task.attempts += 1;
        task.sent = true;
        let p = &mut task.profile;
        p.attempts = task.attempts;
        p.link = Some(LinkName::new(SHORT_LINK));
        p.addr = Some(addr);
        p.connect_start = Some(started);
        p.connect_end = Some(now);
        p.send_start = Some(now);
        p.send_end = Some(now);
        p.first_byte = None;
        p.last_byte = None;
        p.sent_bytes = sent_len;
        p.received_bytes = 0;
        p.first_packet_timeout = Some(t.first_packet);
        task.state = State::Exchanging(Exchange {
            conn,
            addr,
            sent_at: now,
            timeouts: t,
            last_progress: None,
            received: 0,
            sent_len,
            reused,
            keep_alive,
        });
        self.short.exchanging += 1;
        self.stats.requests_sent += 1;
        self.stats.bytes_sent += sent_len as u64;
        self.short
            .timers
            .set(Timer::FirstPacket(id), now + t.first_packet);
        self.short
            .timers
            .set(Timer::ReadWrite(id), now + t.read_write);
        self.actions.push_back(Action::HttpExchange {
            conn,
            task: id,
            request,
        });
        self.data_event(now);
        if self.task_sent_events {
            self.events.push_back(Event::TaskSent {
                id,
                link: LinkName::new(SHORT_LINK),
                first_packet_timeout: t.first_packet,
            });
        }
    }

    /// §8.5: the idle connection the task's attempt took from the pool had ended before the
    /// request was written ([`ExchangeError::NotSent`]). The attempt starts over at once.
    ///
    /// Design: Mars peeks at a cached socket before reusing it and connects afresh when the
    /// peer has closed it; here the core picks the idle connection and the driver checks it
    /// just before writing, so the core takes the choice back. The attempt is undone (it
    /// sent nothing) and begun again with a new plan, whose race finds no idle connection
    /// for that address unless another one is kept (each stale one leaves the pool for good,
    /// so this ends). Nothing is held against the task's retries, the address, the network
    /// estimate or the pool: a server may close an idle connection at any time (RFC 9112
    /// §9.6), and a request that never left may go out again whatever its method (RFC 9112
    /// §9.3.1). Mars's 5-minute ban would have cost every later keep-alive task its reuse
    /// for one connection the server closed on schedule. A reused connection that fails
    /// *after* the request went out is still a failed attempt that bans the pool (Mars):
    /// the request may have been acted on, and a path that breaks idle connections (a NAT
    /// dropping its mapping) looks like that.
    fn short_stale(&mut self, id: TaskId, now: Instant) {
        let Some(task) = self.short.tasks.get_mut(&id) else {
            return;
        };
        task.attempts = task.attempts.saturating_sub(1);
        task.profile.attempts = task.attempts;
        task.sent = false;
        // The attempt already passed its auth check (if it needed one).
        task.auth_passed = task.spec.needs_auth;
        self.short_begin(id, now);
    }

    /// A per-attempt timeout: abort the exchange, blame the address, fail the attempt.
    fn short_attempt_timeout(&mut self, id: TaskId, level: TimeoutLevel, now: Instant) {
        let Some(ShortTask {
            state: State::Exchanging(ex),
            spec,
            ..
        }) = self.short.tasks.get(&id)
        else {
            return;
        };
        let ex = *ex;
        // §6.2: a long-polling task's first-packet check is the long-polling one (−503).
        let level = match level {
            TimeoutLevel::FirstPacket if spec.long_polling.is_some() => TimeoutLevel::LongPolling,
            level => level,
        };
        self.short_drop_attempt(id, now);
        if ex.reused {
            self.short_ban_pool(now);
        }
        self.estimator.record(now, self.net.is_mobile(), 0, None);
        self.short_record(now, id, ex.addr, false, None);
        self.short_failed(id, now, TaskError::Timeout(level));
    }

    /// The exchange on `conn` ended (the driver reported it): clears its timers and state.
    fn short_end_exchange(&mut self, id: TaskId, conn: ConnId) -> Option<Exchange> {
        self.short.conns.remove(&conn);
        let task = self.short.tasks.get_mut(&id)?;
        let State::Exchanging(ex) = task.state else {
            return None;
        };
        task.state = State::Waiting;
        self.short.exchanging = self.short.exchanging.saturating_sub(1);
        for kind in [
            Timer::FirstPacket(id),
            Timer::PacketToPacket(id),
            Timer::ReadWrite(id),
        ] {
            self.short.timers.cancel(kind);
        }
        Some(ex)
    }

    /// The task whose exchange runs on `conn`.
    fn short_exchange_of(&self, conn: ConnId) -> Option<TaskId> {
        let &id = self.short.conns.get(&conn)?;
        match &self.short.tasks.get(&id)?.state {
            State::Exchanging(ex) if ex.conn == conn => Some(id),
            _ => None,
        }
    }

    /// Stops whatever the task's attempt is doing (connects, exchange), telling the driver.
    fn short_drop_attempt(&mut self, id: TaskId, now: Instant) {
        let Some(task) = self.short.tasks.get_mut(&id) else {
            return;
        };
        let state = std::mem::replace(&mut task.state, State::Waiting);
        let conns: Vec<ConnId> = match state {
            State::Connecting { mut dialer, .. } => {
                dialer.abort_all(now).into_iter().map(|a| a.conn).collect()
            }
            State::Exchanging(ex) => {
                self.short.exchanging = self.short.exchanging.saturating_sub(1);
                vec![ex.conn]
            }
            State::Resolving { walk, .. } => {
                if let Some((host, source)) = walk.in_flight() {
                    self.actions.push_back(Action::CancelResolve {
                        link: link_name(id),
                        host,
                        source,
                    });
                }
                Vec::new()
            }
            State::Waiting | State::Queued | State::WaitingAuth { .. } => Vec::new(),
        };
        for conn in conns {
            self.short.conns.remove(&conn);
            self.short.timers.cancel(Timer::Connect(conn));
            self.actions.push_back(Action::Abort { attempt: conn });
        }
        for kind in [
            Timer::Retry(id),
            Timer::Resolve(id),
            Timer::RaceStep(id),
            Timer::FirstPacket(id),
            Timer::PacketToPacket(id),
            Timer::ReadWrite(id),
        ] {
            self.short.timers.cancel(kind);
        }
    }

    /// An attempt failed: retry after the pause while retries remain, else end.
    fn short_failed(&mut self, id: TaskId, now: Instant, error: TaskError) {
        let damaged_budget = self
            .cfg
            .active_recovery()
            .map_or(0, |r| r.damaged_reconnects);
        let Some(task) = self.short.tasks.get_mut(&id) else {
            return;
        };
        if let Some(addr) = task.profile.addr {
            if !task.failed.contains(&addr) && blames_address(&error) {
                task.failed.push(addr);
            }
        }
        let retryable = !matches!(
            error,
            TaskError::Timeout(TimeoutLevel::Total)
                | TaskError::Server { .. }
                | TaskError::Param(_)
                | TaskError::Canceled
                | TaskError::Codec(CodecFailure::Encode(_))
                | TaskError::Dial(DialFailure::Certificate)
        );
        if !task.sent {
            // Failed before a request went out (no address, every connect failed): still
            // an attempt.
            task.attempts += 1;
            task.profile.attempts = task.attempts;
            task.sent = true;
        }
        // Design (Phobos): damaged bytes are the path's fault, not the request's; a few
        // attempts they broke are repeated at once without spending a retry, as the long
        // link reconnects at once after them.
        let free = matches!(error, TaskError::Socket(SocketFailure::Damaged))
            && task.damaged_retries < damaged_budget;
        if free {
            task.damaged_retries += 1;
        } else if !retryable || task.retries_left == 0 {
            self.short_finish(id, now, Err(error));
            return;
        } else {
            task.retries_left -= 1;
        }
        task.state = State::Waiting;
        self.stats.retries += 1;
        let freed = std::mem::take(&mut task.holds_place).then(|| place_host(task));
        let attempt = task.attempts;
        let pause = if free {
            Duration::ZERO
        } else {
            self.cfg.timing.retry_pause
        };
        self.short.timers.set(Timer::Retry(id), now + pause);
        self.events
            .push_back(Event::TaskRetrying { id, attempt, error });
        if let Some(host) = freed {
            self.short_free_place(now, host);
        }
    }

    /// Ends the task with `outcome` (exactly once).
    fn short_finish(&mut self, id: TaskId, now: Instant, outcome: Result<Response, TaskError>) {
        self.short_drop_attempt(id, now);
        self.short.timers.cancel(Timer::Total(id));
        let Some(task) = self.short.tasks.remove(&id) else {
            return;
        };
        let host = place_host(&task);
        if let Some(places) = self.short.places.get_mut(&host) {
            places.queued.remove(&(task.spec.priority, id));
        }
        let holds_place = task.holds_place;
        let zombie = match &outcome {
            Err(error) => super::zombie_budget(&task.spec, task.budget_start, error, now),
            Ok(_) => None,
        };
        match zombie {
            Some(remaining) => {
                let mut task = Box::new(task);
                task.profile.zombie_rounds += 1;
                task.holds_place = false;
                self.save_zombie(id, super::ZombieTask::Short(task), remaining, now);
            }
            None => self.emit_end(id, task.tag, outcome, task.profile, now),
        }
        if holds_place {
            self.short_free_place(now, host);
        } else {
            self.short_forget_host(&host);
        }
    }

    /// A task of `host` gave its place up: the place goes to that host's next waiting task.
    fn short_free_place(&mut self, now: Instant, host: String) {
        if let Some(places) = self.short.places.get_mut(&host) {
            places.running -= 1;
        }
        self.short.freed.push(host);
        self.short_promote(now);
    }

    /// Hands the freed places ([`ShortLinkConfig::max_running`]) to the waiting tasks of
    /// their hosts, in priority order.
    ///
    /// Design: a task given a place may fail at once (no address) and free it again; the
    /// `promoting` flag keeps that from recursing: the place joins `freed`, and the loop
    /// below hands it on.
    fn short_promote(&mut self, now: Instant) {
        if self.short.promoting {
            return;
        }
        self.short.promoting = true;
        while let Some(host) = self.short.freed.pop() {
            loop {
                let next = match self.short.places.get_mut(&host) {
                    Some(p) if p.running < self.cfg.short_link.max_running => p.queued.pop_first(),
                    _ => None,
                };
                let Some((_, id)) = next else {
                    break;
                };
                self.short_begin(id, now);
            }
            self.short_forget_host(&host);
        }
        self.short.promoting = false;
    }

    /// Drops `host`'s places once no task of it holds or waits for one.
    fn short_forget_host(&mut self, host: &str) {
        if self
            .short
            .places
            .get(host)
            .is_some_and(|p| p.running == 0 && p.queued.is_empty())
        {
            self.short.places.remove(host);
        }
    }

    /// The exchange on `conn` is over with a response: keep the connection idle for
    /// `keep` (when given and reuse is not banned), else have the driver close it.
    fn short_release(
        &mut self,
        now: Instant,
        conn: ConnId,
        (addr, host, proxy): (IpPort, String, bool),
        keep: Option<Duration>,
    ) {
        let Some(keep) = keep.filter(|_| !self.short.pool.is_banned(now)) else {
            self.actions.push_back(Action::Abort { attempt: conn });
            return;
        };
        if self.short.pool.idle.len() >= MAX_IDLE {
            let oldest = self
                .short
                .pool
                .idle
                .iter()
                .enumerate()
                .min_by_key(|(_, i)| i.expires)
                .map(|(n, i)| (n, i.conn));
            if let Some((n, old)) = oldest {
                self.short.pool.idle.swap_remove(n);
                self.short.timers.cancel(Timer::Idle(old));
                self.actions.push_back(Action::Abort { attempt: old });
            }
        }
        let expires = now + keep;
        self.short.pool.idle.push(IdleConn {
            conn,
            addr,
            host,
            proxy,
            expires,
        });
        self.short.timers.set(Timer::Idle(conn), expires);
    }

    /// §8.5: a reused connection failed: no reuse for [`POOL_BAN`], idle connections closed.
    fn short_ban_pool(&mut self, now: Instant) {
        self.short.pool.banned_until = Some(now + POOL_BAN);
        self.short_clear_pool();
    }

    /// Closes every idle keep-alive connection.
    fn short_clear_pool(&mut self) {
        for idle in std::mem::take(&mut self.short.pool.idle) {
            self.short.timers.cancel(Timer::Idle(idle.conn));
            self.actions.push_back(Action::Abort { attempt: idle.conn });
        }
    }

    /// An outcome of a short-link address in an attempt of task `id`, into the ranking and
    /// out as an event; none when the attempt went through the app's proxy.
    fn short_record(
        &mut self,
        now: Instant,
        id: TaskId,
        addr: IpPort,
        success: bool,
        rtt: Option<Duration>,
    ) {
        // Design: an attempt through the app's proxy tells of the proxy's path, not of the
        // address's own: a dead proxy refusing every connect got the server's addresses
        // banned for the direct try that §8.6's flip keeps for the last retry, and a proxied
        // connect's round trip was taken for the address's.
        if self.short.tasks.get(&id).is_some_and(|t| t.use_proxy) {
            return;
        }
        if self.net.is_available() {
            self.ranking.record(now, addr, success, rtt);
        }
        self.events.push_back(Event::AddrOutcome {
            link: LinkName::new(SHORT_LINK),
            addr,
            success,
        });
    }
}

/// How long a connection may stay idle: the server's `Keep-Alive: timeout=N` when
/// `0 < N < 60`, else [`DEFAULT_KEEP_ALIVE`] (Mars's rule, §8.5).
pub(crate) fn keep_alive_timeout(header: Option<&str>) -> Duration {
    let n = header.and_then(|h| {
        h.split(',').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("timeout")
                .then(|| v.trim().parse::<u64>().ok())
                .flatten()
        })
    });
    match n {
        Some(n) if n > 0 && n < 60 => Duration::from_secs(n),
        _ => DEFAULT_KEEP_ALIVE,
    }
}

/// Whether request headers ask for a reusable connection (`Connection: Keep-Alive`).
pub(crate) fn wants_keep_alive(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("connection")
            && v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("keep-alive"))
    })
}

/// Keep-alive time when the server names none (or an out-of-range one).
pub(crate) const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a failed reuse turns the keep-alive pool off.
pub(crate) const POOL_BAN: Duration = Duration::from_secs(300);
/// Most idle keep-alive connections kept.
pub(crate) const MAX_IDLE: usize = 16;

/// Whether a failure is the address's fault (so the next attempt tries another first).
/// The host whose places ([`ShortLinkConfig::max_running`]) a task takes: its first
/// short-link host (admission makes sure it has one).
fn place_host(task: &ShortTask) -> String {
    task.spec.short_hosts.first().cloned().unwrap_or_default()
}

fn blames_address(error: &TaskError) -> bool {
    match error {
        TaskError::Http(HttpFailure::Status(s)) => *s >= 500,
        TaskError::Http(_) | TaskError::Socket(_) | TaskError::Dial(_) => true,
        TaskError::Timeout(level) => *level != TimeoutLevel::Total,
        _ => false,
    }
}

/// The host a planned address came from (first host when unknown).
fn host_for(task: &ShortTask, addr: IpPort) -> String {
    host_of(&task.ip_hosts, &task.spec.short_hosts, addr)
}

/// [`host_for`] from the task's parts (while its state is borrowed).
fn host_of(ip_hosts: &[(IpAddr, usize)], hosts: &[String], addr: IpPort) -> String {
    let index = ip_hosts
        .iter()
        .find(|(ip, _)| *ip == addr.ip)
        .map_or(0, |(_, h)| *h);
    let host = hosts.get(index).map_or("", String::as_str);
    // An IPv6 literal goes in brackets in a `Host` header (RFC 9112 §3.2, RFC 3986's
    // IP-literal): a strict server answers `Host: ::1` with a 400.
    match host.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]"),
        Err(_) => host.to_owned(),
    }
}

/// A short-link host string, parsed.
enum HostSpec<'a> {
    /// An IP literal, with its port if given.
    Addr(IpAddr, Option<u16>),
    /// A name to resolve, with its port if given.
    Name(&'a str, Option<u16>),
}

fn parse_host(host: &str) -> HostSpec<'_> {
    if let Ok(sa) = host.parse::<SocketAddr>() {
        return HostSpec::Addr(sa.ip(), Some(sa.port()));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return HostSpec::Addr(ip, None);
    }
    match host.rsplit_once(':') {
        Some((name, port)) => match port.parse::<u16>() {
            Ok(p) => HostSpec::Name(name, Some(p)),
            Err(_) => HostSpec::Name(host, None),
        },
        None => HostSpec::Name(host, None),
    }
}

/// The link name a short-link task's resolutions carry.
fn link_name(id: TaskId) -> LinkName {
    LinkName::from(format!("{SHORT_LINK}#{}", id.0))
}

/// The task of a `short#<id>` link name.
fn parse_link_name(link: &str) -> Option<TaskId> {
    let rest = link.strip_prefix(SHORT_LINK)?.strip_prefix('#')?;
    rest.parse().ok().map(TaskId)
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The name short-link attempts carry in events and profiles.
pub const SHORT_LINK: &str = "short";

/// §8.4: the connect timeout of `addr` in a short-link attempt whose list holds an IPv6
/// address or not ([`ShortLinkConfig::family_connect_timeouts`]).
fn short_connect_timeout(cfg: &crate::Config, list_has_ipv6: bool, addr: IpPort) -> Duration {
    match cfg.short_link.family_connect_timeouts {
        Some((v4, v6)) if list_has_ipv6 => {
            if addr.ip.is_ipv6() {
                v6
            } else {
                v4
            }
        }
        _ => cfg.timing.connect_timeout,
    }
}
/// [`EncodeError::Other`] code of a request the driver could not write as HTTP.
pub const SHORT_REQUEST_INVALID: u32 = 0x5348;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_timeout_follows_mars_bounds() {
        let secs = Duration::from_secs;
        assert_eq!(keep_alive_timeout(None), secs(5));
        assert_eq!(keep_alive_timeout(Some("timeout=30, max=100")), secs(30));
        assert_eq!(keep_alive_timeout(Some("max=3, Timeout = 7")), secs(7));
        assert_eq!(keep_alive_timeout(Some("timeout=0")), secs(5));
        assert_eq!(keep_alive_timeout(Some("timeout=59")), secs(59));
        assert_eq!(keep_alive_timeout(Some("timeout=60")), secs(5));
        assert_eq!(keep_alive_timeout(Some("timeout=x")), secs(5));
    }

    #[test]
    fn keep_alive_is_asked_by_the_connection_header() {
        let h = |v: &str| vec![("Connection".to_owned(), v.to_owned())];
        assert!(wants_keep_alive(&h("Keep-Alive")));
        assert!(wants_keep_alive(&h("Upgrade, keep-alive")));
        assert!(!wants_keep_alive(&h("close")));
        assert!(!wants_keep_alive(&[]));
    }

    #[test]
    fn zero_short_link_limits_are_refused() {
        let codec = std::sync::Arc::new(phobos_codec_mars::MarsCodec::default());
        let addr = IpPort::new(IpAddr::from([10, 0, 0, 1]), 80);
        let build = |c: ShortLinkConfig| {
            crate::Config::builder(codec.clone())
                .link(crate::LinkConfig::new("l").addrs([addr]))
                .short_link(c)
                .build()
        };
        assert!(build(ShortLinkConfig::default()).is_ok());
        assert_eq!(
            build(ShortLinkConfig::default().max_addrs(0)).unwrap_err(),
            crate::ConfigError::Zero("short_link.max_addrs")
        );
        assert_eq!(
            build(ShortLinkConfig::default().max_response_len(0)).unwrap_err(),
            crate::ConfigError::Zero("short_link.max_response_len")
        );
        assert_eq!(
            build(ShortLinkConfig::default().max_running(0)).unwrap_err(),
            crate::ConfigError::Zero("short_link.max_running")
        );
        let (zero, some) = (Duration::ZERO, Duration::from_secs(3));
        for (v4, v6) in [(zero, some), (some, zero)] {
            assert_eq!(
                build(ShortLinkConfig::default().family_connect_timeouts(v4, v6)).unwrap_err(),
                crate::ConfigError::Zero("short_link.family_connect_timeouts")
            );
        }
        let day = Duration::from_secs(86_400 * 400);
        assert!(build(ShortLinkConfig::default().family_connect_timeouts(some, day)).is_err());
        assert!(build(ShortLinkConfig::default().family_connect_timeouts(some, some)).is_ok());
    }

    #[test]
    fn hosts_parse_as_literals_or_names() {
        assert!(matches!(parse_host("10.0.0.1"), HostSpec::Addr(_, None)));
        assert!(matches!(
            parse_host("10.0.0.1:81"),
            HostSpec::Addr(_, Some(81))
        ));
        assert!(matches!(
            parse_host("[::1]:81"),
            HostSpec::Addr(_, Some(81))
        ));
        assert!(matches!(parse_host("[::1]"), HostSpec::Addr(_, None)));
        assert!(matches!(
            parse_host("s.example"),
            HostSpec::Name("s.example", None)
        ));
        assert!(matches!(
            parse_host("s.example:8080"),
            HostSpec::Name("s.example", Some(8080))
        ));
    }

    #[test]
    fn link_names_round_trip() {
        let name = link_name(TaskId(42));
        assert_eq!(name.as_str(), "short#42");
        assert_eq!(parse_link_name(&name), Some(TaskId(42)));
        assert_eq!(parse_link_name("default-longlink"), None);
        assert_eq!(parse_link_name("short#x"), None);
    }

    #[test]
    fn timers_pop_in_deadline_order_and_rearm() {
        let t0 = crate::tests::epoch::epoch();
        let mut t = ShortTimers::default();
        t.set(Timer::Total(TaskId(1)), t0 + Duration::from_secs(5));
        t.set(Timer::Retry(TaskId(1)), t0 + Duration::from_secs(1));
        t.set(Timer::Total(TaskId(1)), t0 + Duration::from_secs(2));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(9)),
            Some(Timer::Retry(TaskId(1)))
        );
        t.cancel(Timer::Total(TaskId(1)));
        assert_eq!(t.next(), None);
    }
}

//! The core's outputs ([`Action`], [`Event`]) and the small types the driver passes in.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use phobos_plugin_api::{AddrSource, CmdId, IpPort, LinkPurpose, TaskId};

use crate::error::{LimitKind, LinkError, PluginPanic, TaskError};
use crate::task::{EndBatch, TaskEnd};

/// The name of a long link (Mars's channel name). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkName(Arc<str>);

impl LinkName {
    /// A link name.
    pub fn new(name: &str) -> Self {
        LinkName(Arc::from(name))
    }

    /// Whether both are the same allocation (then they are equal; equal names made
    /// separately are not the same). A shortcut before a map lookup by name.
    pub(crate) fn is_same(&self, other: &LinkName) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for LinkName {
    /// Mars's main channel, `"default-longlink"`.
    fn default() -> Self {
        // Design: every `TaskSpec::new` names the default link; sharing one allocation
        // makes that a reference-count increment instead of an allocation per task.
        static DEFAULT: OnceLock<LinkName> = OnceLock::new();
        DEFAULT
            .get_or_init(|| LinkName(Arc::from(DEFAULT_LINK)))
            .clone()
    }
}

impl Deref for LinkName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for LinkName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for LinkName {
    fn from(s: &str) -> Self {
        LinkName::new(s)
    }
}

impl From<String> for LinkName {
    fn from(s: String) -> Self {
        LinkName(Arc::from(s))
    }
}

impl fmt::Debug for LinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for LinkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One connection attempt, and the connection it becomes when it succeeds.
///
/// Every [`Action::Connect`] carries a fresh id. The driver names the socket by it in
/// [`Engine::handle_connected`](crate::Engine::handle_connected),
/// [`handle_bytes`](crate::Engine::handle_bytes) and
/// [`handle_closed`](crate::Engine::handle_closed); the core ignores ids it no longer cares
/// about, so late input from an old socket can never be mistaken for the current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn {}", self.0)
    }
}

/// Something the driver must do. Drained with [`Engine::poll_action`](crate::Engine::poll_action)
/// and carried out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Ask ONE source of the IP source chain about one host (the core walks the chain and
    /// times each call itself, spec §10): run `IpSource` number `source` (in the driver's
    /// configured order) on `host` for `purpose`, then call
    /// [`Engine::handle_resolved`](crate::Engine::handle_resolved) with the same link, host
    /// and source. A source index the driver does not have is answered with an error. The
    /// core times the call itself (the source's limit) and sends
    /// [`Action::CancelResolve`] when it stops waiting; the driver needs no timeout of its
    /// own.
    Resolve {
        /// The link that needs addresses.
        link: LinkName,
        /// The host to resolve.
        host: String,
        /// Which source to ask (index into the chain).
        source: usize,
        /// What the addresses are for.
        purpose: LinkPurpose,
    },
    /// The core gave up the IP source call named by `link`, `host` and `source` (its limit
    /// passed, or the link or task no longer needs it): stop the call if it still runs. An
    /// answer that comes anyway is ignored by the core.
    CancelResolve {
        /// The link of the call.
        link: LinkName,
        /// The host of the call.
        host: String,
        /// The source of the call (index into the chain).
        source: usize,
    },
    /// Open a TCP (or TLS) connection to `addr`; report with
    /// [`handle_connected`](crate::Engine::handle_connected) or
    /// [`handle_connect_failed`](crate::Engine::handle_connect_failed). The core times the
    /// attempt itself; the driver needs no connect timeout.
    Connect {
        /// The link this attempt is for.
        link: LinkName,
        /// Names the attempt (and the connection, if it succeeds).
        attempt: ConnId,
        /// Where to connect.
        addr: IpPort,
    },
    /// Give up a connect attempt (it timed out, or another one won): drop the socket,
    /// connected or not, without reporting back.
    Abort {
        /// The attempt.
        attempt: ConnId,
    },
    /// Write these bytes, in order, on the connection. Bytes the socket does not take at
    /// once are reported with [`Engine::handle_unsent`](crate::Engine::handle_unsent) while
    /// the driver holds them: a request's clocks start when its first byte is written.
    Send {
        /// The link (for logs).
        link: LinkName,
        /// The connection.
        conn: ConnId,
        /// One or more whole frames.
        bytes: Bytes,
    },
    /// Close the connection; do not report back (the core already considers it closed).
    Close {
        /// The link (for logs).
        link: LinkName,
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: LinkError,
    },
    /// Run [`AuthCheck::ensure_authed`](phobos_plugin_api::AuthCheck::ensure_authed) for
    /// `host` off the core's loop, then call [`Engine::handle_auth`](crate::Engine::handle_auth).
    EnsureAuth {
        /// The host to authenticate for.
        host: String,
    },
    /// Open a short-link connection to `addr` (through the short link's connector: proxy,
    /// TLS; or a live keep-alive connection to the same address and host); report with
    /// [`handle_connected`](crate::Engine::handle_connected) or
    /// [`handle_connect_failed`](crate::Engine::handle_connect_failed), as for
    /// [`Action::Connect`].
    ShortConnect {
        /// The short-link task the attempt is for.
        task: TaskId,
        /// Names the attempt (and the connection, if it succeeds).
        attempt: ConnId,
        /// Where to connect.
        addr: IpPort,
        /// The host the address belongs to (the `Host` header; the keep-alive pool key).
        host: String,
        /// Go through the driver's short-link proxy (only ever `true` when
        /// [`ShortLinkConfig::proxy`](crate::ShortLinkConfig::proxy) says there is one).
        proxy: bool,
    },
    /// Run one HTTP/1.1 exchange on the short-link connection `conn`: write `request` as a
    /// `POST`, report each read with
    /// [`handle_http_progress`](crate::Engine::handle_http_progress), then the response with
    /// [`handle_http_response`](crate::Engine::handle_http_response) or the failure with
    /// [`handle_http_failed`](crate::Engine::handle_http_failed). The core times the exchange;
    /// an [`Action::Abort`] for `conn` ends it. On an idle keep-alive connection, the driver
    /// first makes sure the server has not closed it meanwhile, and reports
    /// [`ExchangeError::NotSent`](crate::ExchangeError::NotSent) without writing when it has.
    HttpExchange {
        /// The connection (from a [`Action::ShortConnect`] that succeeded, or an idle one the
        /// core reuses).
        conn: ConnId,
        /// The task.
        task: TaskId,
        /// What to send.
        request: crate::HttpRequest,
    },
    /// Tell the core what the transport under the long-link connection `conn` knows about
    /// it, with [`handle_transport`](crate::Engine::handle_transport): a heartbeat reply is
    /// overdue and the core asks whether the path is lossy or dead before it drops the link
    /// (see [`Recovery`](crate::Recovery)). Answer at once, with `None` when the transport
    /// cannot tell; a driver that never answers gets the link judged without the facts a
    /// moment later ([`INSPECT_GRACE`](crate::INSPECT_GRACE)).
    InspectTransport {
        /// The link.
        link: LinkName,
        /// The connection.
        conn: ConnId,
    },
}

/// What the transport under a connection (the kernel's TCP) says about its health, read
/// when the core asks with [`Action::InspectTransport`]. On Linux these are fields of
/// `TCP_INFO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportFacts {
    /// The retransmission timeout in force now, backoff included (`tcpi_rto`).
    pub rto: Duration,
    /// Retransmission timeouts in a row so far for the oldest unacknowledged segment: the
    /// current timeout is the base one doubled this many times (`tcpi_backoff`).
    pub backoff: u8,
    /// Segments sent and not acknowledged yet (`tcpi_unacked`).
    pub unacked: u32,
    /// Time since the peer last acknowledged anything, duplicate acknowledgements and data
    /// included (`tcpi_last_ack_recv`).
    pub since_last_ack: Duration,
    /// Data segments sent on the connection so far (`tcpi_data_segs_out`; 0 if unknown).
    pub data_segments_sent: u32,
    /// Segments retransmitted on the connection so far (`tcpi_total_retrans`).
    pub retransmitted: u32,
}

impl TransportFacts {
    /// Facts from their four values, with no history (see
    /// [`with_history`](Self::with_history)).
    pub fn new(rto: Duration, backoff: u8, unacked: u32, since_last_ack: Duration) -> Self {
        TransportFacts {
            rto,
            backoff,
            unacked,
            since_last_ack,
            data_segments_sent: 0,
            retransmitted: 0,
        }
    }

    /// The connection's history: data segments sent and segments retransmitted so far.
    pub fn with_history(mut self, data_segments_sent: u32, retransmitted: u32) -> Self {
        self.data_segments_sent = data_segments_sent;
        self.retransmitted = retransmitted;
        self
    }

    /// Whether the connection's history shows a lossy path: at least
    /// [`LOSSY_RETRANSMIT_PERCENT`](crate::LOSSY_RETRANSMIT_PERCENT) of its data segments
    /// were retransmitted (false without a history).
    pub fn lossy_history(&self) -> bool {
        self.data_segments_sent > 0
            && u64::from(self.retransmitted) * 100
                >= u64::from(self.data_segments_sent) * u64::from(crate::LOSSY_RETRANSMIT_PERCENT)
    }

    /// The retransmission timeout before any backoff (never below 1 ms).
    pub fn base_rto(&self) -> Duration {
        let base = self.rto / (1u32 << self.backoff.min(16));
        base.max(Duration::from_millis(1))
    }
}

/// Something the app (or the driver's metrics) should learn. Drained with
/// [`Engine::poll_event`](crate::Engine::poll_event).
// The big variant (`TaskEnded`) is also the most common one; boxing it would cost an
// allocation per task for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A task ended: exactly once per started task (or as one of an
    /// [`Event::TasksEnded`]).
    TaskEnded(TaskEnd),
    /// Several tasks ended together, successfully: the [`Event::TaskEnded`] of each, in
    /// order ([`EndBatch::into_ends`]). Only for a driver that asked for it with
    /// [`Engine::set_end_batches`](crate::Engine::set_end_batches); a driver that did not
    /// never sees one.
    TasksEnded(EndBatch),
    /// The server pushed a frame.
    Push {
        /// The link it came on.
        link: LinkName,
        /// Its command id.
        cmd_id: CmdId,
        /// Its body.
        body: Bytes,
    },
    /// A link changed status.
    LinkStatus {
        /// The link.
        link: LinkName,
        /// The new status.
        status: LinkStatus,
        /// Why it went down or failed; `None` for `Connecting`/`Connected`.
        reason: Option<LinkError>,
    },
    /// An attempt of a task failed and the task will be tried again.
    TaskRetrying {
        /// The task.
        id: TaskId,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// Why it failed.
        error: TaskError,
    },
    /// A task's request was handed to a link: once per hand-over. A retry hands it over
    /// again (after an [`Event::TaskRetrying`]), and so does a short-link attempt whose idle
    /// keep-alive connection turns out to be closed before the request was written: that
    /// attempt starts over on another connection, with no retry spent and no `TaskRetrying`,
    /// and a second `TaskSent` follows.
    TaskSent {
        /// The task.
        id: TaskId,
        /// The link.
        link: LinkName,
        /// The first-packet timeout chosen for this attempt.
        first_packet_timeout: Duration,
    },
    /// A failed task was kept as a zombie, to be retried within its remaining budget
    /// (spec §14). Its [`Event::TaskEnded`] comes later.
    TaskZombie {
        /// The task.
        id: TaskId,
        /// The budget left.
        remaining: Duration,
    },
    /// A limit refused a task (Mars's `ReportTaskLimited`), just before its end.
    TaskLimited {
        /// The task.
        id: TaskId,
        /// Which limit.
        kind: LimitKind,
        /// Frequency: milliseconds since the previous identical request; flow: request
        /// length in bytes.
        param: u64,
    },
    /// The outcome of using an address, for IP ranking and reporting (Mars's IP reports,
    /// §11.5). Local disconnects are not reported as failures.
    AddrOutcome {
        /// The link.
        link: LinkName,
        /// The address.
        addr: IpPort,
        /// `true` for success.
        success: bool,
    },
    /// The main link has been down for a while: the app should poll for data another way
    /// (typically the short link; Mars's `RequestSync`, §15.4).
    RequestSync,
    /// A connect cycle ended (connected, failed, or interrupted): which addresses were tried
    /// and how each attempt ended. Comes just before the link's
    /// [`LinkStatus::Connected`]/[`LinkStatus::ConnectFailed`] event.
    ConnectCycle(ConnectReport),
    /// A plugin panicked in a call from the engine. The panic was caught and the call
    /// answered with its fallback (`phobos_plugin_api::panics`); the outcome (a dropped link,
    /// a task ended with a codec error, a fixed heartbeat interval, …) shows in the other
    /// events. Comes after the events of the same input.
    PluginPanicked(PluginPanic),
    /// A heartbeat was answered.
    HeartbeatAcked {
        /// The link.
        link: LinkName,
        /// Time from sending the heartbeat to its reply.
        rtt: Duration,
    },
}

/// What one connect cycle did ([`Event::ConnectCycle`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectReport {
    /// The link.
    pub link: LinkName,
    /// The profile that raced.
    pub profile: crate::ConnectProfile,
    /// Every attempt started, in start order.
    pub attempts: Vec<AttemptReport>,
    /// Addresses the cycle planned (attempted or not).
    pub planned: usize,
    /// From the start of the cycle (resolution included) to connected; `None` when the cycle
    /// failed or was interrupted.
    pub connected_after: Option<Duration>,
    /// From the start of the cycle to its end.
    pub elapsed: Duration,
}

/// One attempt of a connect cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttemptReport {
    /// The address.
    pub addr: IpPort,
    /// Where the address came from ([`AddrSource::Debug`] for fixed addresses).
    pub source: AddrSource,
    /// When it started, from the start of the cycle.
    pub started_after: Duration,
    /// When it ended, from the start of the cycle.
    pub ended_after: Duration,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

/// How one connect attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// It connected first.
    Won,
    /// The peer refused it.
    Refused,
    /// Its own connect timeout passed.
    TimedOut,
    /// Its transport was up, and its handshake ran out of the handshake timeout
    /// ([`Recovery::handshake_timeout`](crate::Recovery#structfield.handshake_timeout)).
    HandshakeTimedOut,
    /// Another attempt won, or the cycle was interrupted (network change, reset).
    Aborted,
    /// Another dial error.
    Failed(DialError),
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptOutcome::Won => f.write_str("won"),
            AttemptOutcome::Refused => f.write_str("refused"),
            AttemptOutcome::TimedOut => f.write_str("timed out"),
            AttemptOutcome::HandshakeTimedOut => f.write_str("handshake timed out"),
            AttemptOutcome::Aborted => f.write_str("aborted"),
            AttemptOutcome::Failed(e) => write!(f, "error {e:?}"),
        }
    }
}

/// A long link's status (Mars's `OnLongLinkStatusChange` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkStatus {
    /// Resolving or connecting.
    Connecting,
    /// Connected to this address.
    Connected(IpPort),
    /// Was connected, went down.
    Disconnected,
    /// A connect cycle failed.
    ConnectFailed,
}

/// How an established connection ended, as the driver saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCause {
    /// The peer closed the stream (EOF).
    RemoteClosed,
    /// A read or write failed with this OS error number (or a driver-defined negative code).
    Io(i32),
    /// The transport found received bytes damaged and gave up the connection (a TLS record
    /// that failed its integrity check, or a TLS alert saying the peer found one).
    Damaged,
}

/// Why a connect attempt failed, as the driver saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DialError {
    /// Connection refused (RST).
    Refused,
    /// Network or host unreachable.
    Unreachable,
    /// A TLS or proxy handshake failed.
    Handshake,
    /// A TLS handshake failed on damaged bytes (a record or message that failed its check,
    /// or the peer's alert saying it found one): the path answers, its bytes were spoiled.
    Damaged,
    /// The server's TLS certificate was refused (untrusted issuer, wrong name, expired, pin
    /// mismatch).
    Certificate,
    /// Another OS error number.
    Io(i32),
}

/// Mars's main long-link channel name.
pub const DEFAULT_LINK: &str = "default-longlink";

/// Counters kept by the engine since it was built, for metrics
/// ([`Engine::stats`](crate::Engine::stats)). Events carry the details; these are the
/// totals a driver exports without tracking events itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Tasks admitted by [`Engine::start_task`](crate::Engine::start_task).
    pub tasks_started: u64,
    /// Tasks that ended with a response.
    pub tasks_succeeded: u64,
    /// Tasks that ended with an error other than [`TaskError::Canceled`].
    pub tasks_failed: u64,
    /// Tasks the app canceled.
    pub tasks_canceled: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Times a failed task was kept as a zombie.
    pub zombies_saved: u64,
    /// Tasks refused by a limit.
    pub tasks_limited: u64,
    /// Connect attempts started.
    pub connects_started: u64,
    /// Connect attempts that failed or timed out.
    pub connects_failed: u64,
    /// Established connections that went down.
    pub links_dropped: u64,
    /// Request frames handed to links.
    pub requests_sent: u64,
    /// Bytes handed to links (requests, heartbeats, identify, keeper frames).
    pub bytes_sent: u64,
    /// Bytes received from links.
    pub bytes_received: u64,
    /// Heartbeat (or identify) frames sent.
    pub heartbeats_sent: u64,
    /// Heartbeats that went unanswered.
    pub heartbeat_timeouts: u64,
    /// Stall probes sent (heartbeats sent because a task was owed a response on a quiet
    /// link; also counted in `heartbeats_sent`).
    pub stall_probes: u64,
    /// Overdue heartbeat replies whose deadline the transport's facts moved (the path was
    /// lossy, not dead; see [`Recovery`](crate::Recovery)).
    pub transport_waits: u64,
    /// Pushes received.
    pub pushes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_link_name_is_one_allocation_and_others_compare_by_text() {
        assert!(LinkName::default().is_same(&LinkName::default()));
        let (a, b) = (LinkName::new(DEFAULT_LINK), LinkName::from(DEFAULT_LINK));
        assert!(!a.is_same(&b) && !a.is_same(&LinkName::default()));
        assert_eq!(a, b);
        assert_eq!(a, LinkName::default());
        assert_ne!(a, LinkName::new("push"));
    }
}

//! The core's outputs ([`Action`], [`Event`]) and the small types the driver passes in.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use phobos_plugin_api::{CmdId, IpPort, TaskId};

use crate::error::{LimitKind, LinkError, TaskError};
use crate::task::TaskEnd;

/// The name of a long link (Mars's channel name). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkName(Arc<str>);

impl LinkName {
    /// A link name.
    pub fn new(name: &str) -> Self {
        LinkName(Arc::from(name))
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
        DEFAULT.get_or_init(|| LinkName::new(DEFAULT_LINK)).clone()
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
    /// Resolve the link's hosts through the `IpSource` chain, then call
    /// [`Engine::handle_resolved`](crate::Engine::handle_resolved) with the link name.
    Resolve {
        /// The link that needs addresses.
        link: LinkName,
        /// The hosts to resolve, in order.
        hosts: Vec<String>,
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
    /// Write these bytes, in order, on the connection.
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
}

/// Something the app (or the driver's metrics) should learn. Drained with
/// [`Engine::poll_event`](crate::Engine::poll_event).
// The big variant (`TaskEnded`) is also the most common one; boxing it would cost an
// allocation per task for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A task ended: exactly once per started task.
    TaskEnded(TaskEnd),
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
    /// A task's request was handed to a link.
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
    /// A heartbeat was answered.
    HeartbeatAcked {
        /// The link.
        link: LinkName,
        /// Time from sending the heartbeat to its reply.
        rtt: Duration,
    },
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
    /// Pushes received.
    pub pushes: u64,
}

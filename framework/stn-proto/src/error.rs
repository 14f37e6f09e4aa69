//! Why a task, a connect attempt or a link failed.
//!
//! [`TaskError`] is what a task ends with; [`TaskError::kind`] says which level failed
//! (parameters, dialing, the socket, a timeout and its level, the codec, the server, auth, the
//! app's cancel, a rate limit). [`LinkError`] says why a link went down or failed to come up and
//! is carried by [`Event::LinkStatus`](crate::Event::LinkStatus) and
//! [`Action::Close`](crate::Action::Close).
//!
//! Every error can also be turned into Mars's `(err_type, err_code)` pair with
//! [`TaskError::mars_code`], for hosts that report in Mars's vocabulary.

use std::fmt;

use phobos_plugin_api::{DecodeError, EncodeError};

/// Why a task ended without a response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task's parameters were refused at admission; nothing was sent.
    #[error("invalid task: {0}")]
    Param(#[from] ParamError),
    /// A local condition ended the task (no network, no channel, interrupted, released).
    #[error("{0}")]
    Local(#[from] LocalError),
    /// No connection to the server could be made.
    #[error("could not connect: {0}")]
    Dial(#[from] DialFailure),
    /// The connection failed after it was made.
    #[error("connection failed: {0}")]
    Socket(#[from] SocketFailure),
    /// A deadline passed; the level says which one.
    #[error("{0} timeout")]
    Timeout(TimeoutLevel),
    /// Bytes could not be framed or unframed.
    #[error("codec error: {0}")]
    Codec(#[from] CodecFailure),
    /// The response was refused by the configured
    /// [`ResponseCheck`](crate::ResponseCheck) with this code.
    #[error("server refused the request (code {code})")]
    Server {
        /// The code the response check gave.
        code: i32,
    },
    /// Authentication failed.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthFailure),
    /// The app canceled the task with [`Engine::cancel_task`](crate::Engine::cancel_task).
    #[error("canceled by the app")]
    Canceled,
    /// An anti-avalanche limit refused the request.
    #[error("refused by the {0} limit")]
    Limited(LimitKind),
    /// A short-link HTTP exchange failed at the HTTP level (status, malformed response).
    #[error("HTTP: {0}")]
    Http(#[from] HttpFailure),
}

impl TaskError {
    /// Which level failed, as a small `Copy` value to `match` on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            TaskError::Param(_) => ErrorKind::Param,
            TaskError::Local(_) => ErrorKind::Local,
            TaskError::Dial(DialFailure::Certificate) => ErrorKind::Certificate,
            TaskError::Dial(_) => ErrorKind::Dial,
            TaskError::Socket(_) => ErrorKind::Socket,
            TaskError::Timeout(level) => ErrorKind::Timeout(*level),
            TaskError::Codec(_) => ErrorKind::Codec,
            TaskError::Server { .. } => ErrorKind::Server,
            TaskError::Auth(_) => ErrorKind::Auth,
            TaskError::Canceled => ErrorKind::Canceled,
            TaskError::Limited(kind) => ErrorKind::Limited(*kind),
            TaskError::Http(_) => ErrorKind::Http,
        }
    }

    /// Mars's `(ErrCmdType, code)` pair for this error (spec §5), for hosts that report in
    /// Mars's vocabulary, as the long link reports it: its attempt timeouts are type 6
    /// (`kEctNetMsgXP`). Mars types the short link's attempt timeouts 5 (`kEctHttp`), so for
    /// a task that may have ended on either, use [`mars_code_on`](Self::mars_code_on) with
    /// the link of its profile.
    ///
    /// Types: 2 Dial, 3 Dns, 4 Socket, 5 Http, 6 NetMsgXP, 7 EnDecode, 8 Server, 9 Local,
    /// 10 Canceled.
    pub fn mars_code(&self) -> (i32, i32) {
        self.mars_code_on("")
    }

    /// Mars's `(ErrCmdType, code)` pair for this error as a task that ended on `link`
    /// reports it (the link of its [`TaskProfile`](crate::TaskProfile); `""` when it has
    /// none): the first-packet, packet-to-packet and read/write timeouts are type 5
    /// (`kEctHttp`) on the short link ([`SHORT_LINK`](crate::SHORT_LINK)) and 6 on a long
    /// link, as in Mars's two `__RunOnTimeout`s (spec §6.2).
    pub fn mars_code_on(&self, link: &str) -> (i32, i32) {
        let attempt_timeout = if link == crate::SHORT_LINK { 5 } else { 6 };
        match self {
            // §3.2 step 8: the short link refusing a send-only task is `kEctLocalStartTaskFail`.
            TaskError::Param(ParamError::SendOnlyOnShortLink) => (9, -3),
            TaskError::Param(_) => (9, -12),
            TaskError::Local(l) => (9, l.mars_code()),
            TaskError::Dial(DialFailure::NoAddress) => (3, -10606),
            TaskError::Dial(DialFailure::Io { errno }) => (2, *errno),
            TaskError::Dial(_) => (4, -10087),
            TaskError::Socket(SocketFailure::RemoteClosed) => (4, -10090),
            TaskError::Socket(SocketFailure::HeartbeatTimeout) => (4, -10091),
            TaskError::Socket(SocketFailure::Io { errno }) => (4, *errno),
            TaskError::Socket(SocketFailure::Damaged) => (6, -10504),
            TaskError::Timeout(level) => match level {
                TimeoutLevel::Connect => (4, -10087),
                TimeoutLevel::FirstPacket => (attempt_timeout, -500),
                TimeoutLevel::PacketToPacket => (attempt_timeout, -501),
                TimeoutLevel::ReadWrite => (attempt_timeout, -502),
                TimeoutLevel::LongPolling => (5, -503),
                TimeoutLevel::Total => (9, -1),
            },
            TaskError::Codec(CodecFailure::Decode(_)) => (6, -10504),
            // §4: `Req2Buf` refusing ends the task with `(kEctEnDecode, err)`: the code a
            // `RequestEncoder` (or a codec) refused with, as Mars's signed `int`.
            TaskError::Codec(CodecFailure::Encode(EncodeError::Other(code))) => (7, *code as i32),
            TaskError::Codec(CodecFailure::Encode(_)) => (7, -1),
            TaskError::Codec(CodecFailure::Response { code }) => (7, *code),
            TaskError::Codec(CodecFailure::NoSequence) => (7, -1),
            // §4: `Buf2Resp` returning TaskEnd ends the task with `(kEctEnDecode, err)`.
            TaskError::Server { code } => (7, *code),
            TaskError::Auth(_) => (9, -3),
            TaskError::Canceled => (10, -10095),
            TaskError::Limited(_) => (9, -4),
            TaskError::Http(h) => h.mars_code(),
        }
    }
}

/// Which level a [`TaskError`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad task parameters (Mars `kEctLocalTaskParam` and friends).
    Param,
    /// A local condition (no network, no channel, interrupted by a network change, released).
    Local,
    /// Resolving or connecting failed.
    Dial,
    /// The server's TLS certificate was refused. A security failure rather than a network
    /// one: another attempt at the same server will not help until its certificate or the
    /// client's trust settings change.
    Certificate,
    /// The established connection failed.
    Socket,
    /// A timeout, with its level.
    Timeout(TimeoutLevel),
    /// Framing or unframing failed.
    Codec,
    /// The server's response was refused.
    Server,
    /// Authentication failed.
    Auth,
    /// The app canceled the task.
    Canceled,
    /// A rate limit refused the task.
    Limited(LimitKind),
    /// A short-link HTTP response was refused or malformed.
    Http,
}

/// Which deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TimeoutLevel {
    /// Every address of the link timed out while connecting.
    Connect,
    /// No byte of the response arrived within the first-packet timeout (spec §6.2).
    FirstPacket,
    /// Response bytes stopped arriving for the packet-to-packet timeout.
    PacketToPacket,
    /// The whole exchange took longer than the read/write timeout.
    ReadWrite,
    /// A short-link long-polling task's response did not begin within its long-polling
    /// timeout (spec §6.2; Mars's −503). On the short link this takes the place of the
    /// first-packet timeout for a task with [`long_polling`](crate::TaskSpec::long_polling).
    LongPolling,
    /// The task's whole budget (spec §6.1, or the task's own total timeout) is spent.
    Total,
}

impl fmt::Display for TimeoutLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutLevel::Connect => "connect",
            TimeoutLevel::FirstPacket => "first-packet",
            TimeoutLevel::PacketToPacket => "packet-to-packet",
            TimeoutLevel::ReadWrite => "read/write",
            TimeoutLevel::LongPolling => "long-polling",
            TimeoutLevel::Total => "total",
        })
    }
}

/// Which anti-avalanche limit refused a task (spec §13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKind {
    /// Too many identical request bodies (Mars's frequency limit, report kind 1).
    Frequency,
    /// Too many bytes sent on a mobile network (Mars's flow limit, report kind 2).
    Flow,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitKind::Frequency => "frequency",
            LimitKind::Flow => "flow",
        })
    }
}

/// A task parameter the core refuses (spec §3.2 step 1, §18.4).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// `server_cost` above the 120 s maximum.
    #[error("server cost {0:?} exceeds 120 s")]
    ServerCostTooLarge(std::time::Duration),
    /// `retry_count` above the maximum of 30.
    #[error("retry count {0} exceeds 30")]
    RetryCountTooLarge(u32),
    /// `total_timeout` above the 600 s maximum, or zero.
    #[error("total timeout {0:?} is zero or exceeds 600 s")]
    TotalTimeoutOutOfRange(std::time::Duration),
    /// `long_polling_timeout` above the 600 s maximum, or zero.
    #[error("long-polling timeout {0:?} is zero or exceeds 600 s")]
    LongPollingTimeoutOutOfRange(std::time::Duration),
    /// A priority above 5.
    #[error("priority {0} is above 5")]
    Priority(u8),
    /// The task names a long link the config does not have.
    #[error("unknown long link {0:?}")]
    UnknownLink(String),
    /// A short-link task without any host (Mars would spin forever, §18.4).
    #[error("short-link task without a host")]
    NoShortLinkHost,
    /// A short-link task without a path (Mars's `cgi`).
    #[error("short-link task without a path")]
    NoShortLinkPath,
    /// A send-only task that may only go over the short link.
    #[error("send-only tasks need the long link")]
    SendOnlyOnShortLink,
    /// The body does not fit in one frame of the codec.
    #[error("body of {len} bytes exceeds the longest body one frame holds, {max} bytes")]
    BodyTooLarge {
        /// The body length.
        len: usize,
        /// The longest body one frame holds: the codec's frame limit less its head.
        max: usize,
    },
}

/// A local condition that ended a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    /// A network-status-sensitive task started with no network (Mars −6).
    #[error("no network")]
    NoNetwork,
    /// The task asked for a transport this core cannot run (Mars −5). The short link is not
    /// part of this core yet, so short-only tasks end with this.
    #[error("no usable channel")]
    NoChannel,
    /// The task's attempt was interrupted by a network change and it had no retry left
    /// (Mars −7).
    #[error("interrupted by a network change")]
    Interrupted,
    /// The engine was reset with [`Engine::reset`](crate::Engine::reset) (Mars −9).
    #[error("engine reset")]
    Reset,
}

impl LocalError {
    fn mars_code(self) -> i32 {
        match self {
            LocalError::NoNetwork => -6,
            LocalError::NoChannel => -5,
            LocalError::Interrupted => -7,
            LocalError::Reset => -9,
        }
    }
}

/// Why a connection could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialFailure {
    /// Resolution gave no address to connect to (Mars `(kEctDns, -10606)`).
    #[error("no address to connect to")]
    NoAddress,
    /// Every address refused the connection.
    #[error("connection refused")]
    Refused,
    /// Every address was unreachable.
    #[error("server unreachable")]
    Unreachable,
    /// The last address failed with this OS error.
    #[error("{}", os_error(*errno))]
    Io {
        /// The OS error number (or a driver-defined negative code).
        errno: i32,
    },
    /// The handshake above TCP (TLS, proxy) failed.
    #[error("handshake failed")]
    Handshake,
    /// The server's TLS certificate was refused: untrusted issuer, wrong name, expired, or a
    /// pin mismatch.
    #[error("server certificate refused")]
    Certificate,
}

/// Why an established connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SocketFailure {
    /// The server closed the connection (Mars −10090).
    #[error("closed by the server")]
    RemoteClosed,
    /// A read or write failed with this OS error.
    #[error("{}", os_error(*errno))]
    Io {
        /// The OS error number (or a driver-defined negative code).
        errno: i32,
    },
    /// A heartbeat went unanswered (Mars −10091).
    #[error("heartbeat unanswered")]
    HeartbeatTimeout,
    /// The transport found received bytes damaged (a TLS record that failed its integrity
    /// check). Mars has no such check; its codes are those of a malformed frame.
    #[error("damaged bytes (integrity check failed)")]
    Damaged,
}

/// Why framing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecFailure {
    /// Received bytes are not a valid frame; the link was dropped.
    #[error("malformed frame: {0}")]
    Decode(DecodeError),
    /// The request could not be framed.
    #[error("cannot frame request: {0}")]
    Encode(EncodeError),
    /// The [`ResponseCheck`](crate::ResponseCheck) could not use the response (Mars's
    /// `Buf2Resp` decode failure), after the task's retries.
    #[error("response refused by the response check (code {code})")]
    Response {
        /// The code the response check gave.
        code: i32,
    },
    /// The codec's [`is_reserved_seq`](phobos_plugin_api::PacketCodec::is_reserved_seq)
    /// left the task no sequence number: it reserved every one the engine tried (two runs
    /// of 65,536 in a row). Nothing was sent. A fault of the codec.
    #[error("the codec reserves every sequence number tried")]
    NoSequence,
}

/// Why a short-link HTTP exchange failed at the HTTP level (spec §8.3). Transport failures
/// (the server closing before the response is complete, IO errors) are
/// [`SocketFailure`]s, as in Mars.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpFailure {
    /// A complete response with a status the codec refuses (Mars `(kEctHttp, status)`).
    #[error("status {0}")]
    Status(u16),
    /// The status line is not `HTTP/1.x <code> ...` (Mars −10195).
    #[error("bad status line")]
    BadStatusLine,
    /// The header block is malformed or larger than the limit (Mars −10194).
    #[error("bad response headers")]
    BadHeaders,
    /// The body framing (chunked encoding, content length) is broken (Mars −10194).
    #[error("bad response body framing")]
    BadBody,
    /// The body is larger than the configured limit.
    #[error("response body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The codec refused a complete response for a codec-specific reason
    /// ([`ShortLinkReject::Other`](phobos_plugin_api::ShortLinkReject::Other)).
    #[error("response refused by the codec (reason {0})")]
    Rejected(u32),
}

impl HttpFailure {
    /// Mars's `(ErrCmdType, code)` pair: type 5 (`kEctHttp`) with the status or the parse
    /// code, type 7 (`kEctEnDecode`) for a codec refusal.
    pub fn mars_code(self) -> (i32, i32) {
        match self {
            HttpFailure::Status(status) => (5, i32::from(status)),
            HttpFailure::BadStatusLine => (5, -10195),
            HttpFailure::BadHeaders | HttpFailure::BadBody | HttpFailure::BodyTooLarge { .. } => {
                (5, -10194)
            }
            HttpFailure::Rejected(code) => (7, code as i32),
        }
    }
}

/// Why authentication failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// [`AuthCheck::ensure_authed`](phobos_plugin_api::AuthCheck::ensure_authed) reported
    /// that the credentials were refused.
    #[error("credentials rejected: {0}")]
    Rejected(String),
    /// The server rejected the link's identify frame; the link stays down until the app
    /// reconnects it.
    #[error("identify rejected on link {0}")]
    IdentifyRejected(String),
}

/// Which kind of plugin a [`PluginPanic`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PluginKind {
    /// The [`PacketCodec`](phobos_plugin_api::PacketCodec).
    Codec,
    /// The [`AuthCheck`](phobos_plugin_api::AuthCheck).
    Auth,
    /// An [`IpSource`](phobos_plugin_api::IpSource).
    IpSource,
    /// The [`HeartbeatPolicyFactory`](phobos_plugin_api::HeartbeatPolicyFactory) or a
    /// [`HeartbeatPolicy`](phobos_plugin_api::HeartbeatPolicy) it built.
    Heartbeat,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PluginKind::Codec => "codec",
            PluginKind::Auth => "auth",
            PluginKind::IpSource => "ip source",
            PluginKind::Heartbeat => "heartbeat",
        })
    }
}

/// A plugin panicked in a call, and the panic was caught where the framework called it
/// ([`Event::PluginPanicked`](crate::Event::PluginPanicked)).
///
/// The call was answered with the fallback `phobos_plugin_api::panics` documents (for a
/// codec's `decode`, [`DecodeError::Other`] with
/// [`PLUGIN_PANICKED`](phobos_plugin_api::panics::PLUGIN_PANICKED): the link is dropped as
/// for a malformed frame); this says which plugin and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} plugin {name:?} panicked in {call}: {message}")]
#[non_exhaustive]
pub struct PluginPanic {
    /// Which kind of plugin.
    pub kind: PluginKind,
    /// The plugin's `name()` (a placeholder if that panicked too).
    pub name: String,
    /// The trait method that panicked (`"decode"`, `"next_interval"`, …).
    pub call: &'static str,
    /// The panic's message (its `&str` or `String` payload, or a placeholder).
    pub message: String,
}

impl PluginPanic {
    /// A panic of the `kind` plugin named `name` in `call`, with `message`.
    pub fn new(kind: PluginKind, name: String, call: &'static str, message: String) -> Self {
        PluginPanic {
            kind,
            name,
            call,
            message,
        }
    }
}

/// Why a link went down, or failed to come up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Resolution gave no address.
    #[error("no address to connect to")]
    NoAddress,
    /// Every address failed; this is the last address's failure.
    #[error("connect failed: {0}")]
    Dial(DialFailure),
    /// Every address timed out while connecting.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The established connection failed.
    #[error("{0}")]
    Socket(SocketFailure),
    /// The server sent bytes that are not a frame (Mars disconnect reason 10007).
    #[error("malformed frame: {0}")]
    Decode(DecodeError),
    /// The link stopped delivering bytes while tasks waited (a first-packet or
    /// packet-to-packet timeout with no other traffic; Mars 10007).
    #[error("link stalled ({0} timeout)")]
    Stalled(TimeoutLevel),
    /// The network changed (Mars 10009).
    #[error("network changed")]
    NetworkChange,
    /// The server rejected the identify frame.
    #[error("identify rejected")]
    IdentifyRejected,
    /// The app's [`ResponseCheck`](crate::ResponseCheck) refused a response on the link
    /// with [`ResponseVerdict::Retry`](crate::ResponseVerdict::Retry) (Mars's default fail
    /// handle, disconnect reason 10007).
    #[error("response refused by the response check (code {code})")]
    ResponseRefused {
        /// The check's code.
        code: i32,
    },
    /// Closed on request of the app ([`Engine::redo_tasks`](crate::Engine::redo_tasks),
    /// [`Engine::reset`](crate::Engine::reset); Mars 10000).
    #[error("closed by the app")]
    Reset,
}

impl LinkError {
    /// Mars's `LongLinkErrCode` for this disconnect reason (spec §5), 0 when it has none.
    pub fn mars_code(&self) -> i32 {
        match self {
            LinkError::Reset => 10000,
            LinkError::Socket(SocketFailure::RemoteClosed) => 10001,
            LinkError::Socket(SocketFailure::HeartbeatTimeout) => 10003,
            LinkError::Socket(SocketFailure::Io { .. }) => 10005,
            // Bytes the TLS layer found damaged: no Mars counterpart; its "decode error".
            LinkError::Socket(SocketFailure::Damaged) => 10004,
            // §5: Mars drops a link with an unusable frame as a batch failure, 10007.
            LinkError::Decode(_) | LinkError::Stalled(_) | LinkError::ResponseRefused { .. } => {
                10007
            }
            LinkError::NetworkChange => 10009,
            LinkError::IdentifyRejected => 10018,
            LinkError::NoAddress | LinkError::Dial(_) | LinkError::ConnectTimeout => 0,
        }
    }
}

/// An OS error number as text: the system's description with the number (`Too many open
/// files (os error 24)`), or just the number for a driver-defined negative code.
fn os_error(errno: i32) -> String {
    if errno > 0 {
        // Formatting only (the C library's message table): no IO.
        std::io::Error::from_raw_os_error(errno).to_string()
    } else {
        format!("OS error {errno}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_the_level() {
        assert_eq!(
            TaskError::Timeout(TimeoutLevel::FirstPacket).kind(),
            ErrorKind::Timeout(TimeoutLevel::FirstPacket)
        );
        assert_eq!(
            TaskError::Limited(LimitKind::Flow).kind(),
            ErrorKind::Limited(LimitKind::Flow)
        );
        assert_eq!(
            TaskError::from(ParamError::RetryCountTooLarge(31)).kind(),
            ErrorKind::Param
        );
    }

    #[test]
    fn mars_codes_match_the_spec_table() {
        assert_eq!(
            TaskError::Timeout(TimeoutLevel::FirstPacket).mars_code(),
            (6, -500)
        );
        assert_eq!(TaskError::Timeout(TimeoutLevel::Total).mars_code(), (9, -1));
        assert_eq!(
            TaskError::Limited(LimitKind::Frequency).mars_code(),
            (9, -4)
        );
        assert_eq!(
            TaskError::from(LocalError::Interrupted).mars_code(),
            (9, -7)
        );
        assert_eq!(
            TaskError::from(SocketFailure::HeartbeatTimeout).mars_code(),
            (4, -10091)
        );
        assert_eq!(LinkError::NetworkChange.mars_code(), 10009);
        assert_eq!(
            TaskError::from(ParamError::SendOnlyOnShortLink).mars_code(),
            (9, -3)
        );
        assert_eq!(
            TaskError::from(ParamError::RetryCountTooLarge(31)).mars_code(),
            (9, -12)
        );
        assert_eq!(TaskError::Server { code: 403 }.mars_code(), (7, 403));
        // §5: the short link's attempt timeouts are typed `kEctHttp`, the long link's
        // `kEctNetMsgXP`; long polling is the short link's alone.
        let short = crate::SHORT_LINK;
        for (level, code) in [
            (TimeoutLevel::FirstPacket, -500),
            (TimeoutLevel::PacketToPacket, -501),
            (TimeoutLevel::ReadWrite, -502),
        ] {
            assert_eq!(TaskError::Timeout(level).mars_code_on(short), (5, code));
            assert_eq!(
                TaskError::Timeout(level).mars_code_on("default-longlink"),
                (6, code)
            );
            assert_eq!(TaskError::Timeout(level).mars_code(), (6, code));
        }
        let long_polling = TaskError::Timeout(TimeoutLevel::LongPolling);
        assert_eq!(long_polling.mars_code_on(short), (5, -503));
        assert_eq!(
            TaskError::Timeout(TimeoutLevel::Total).mars_code_on(short),
            (9, -1)
        );
        // §4: a refused `Req2Buf` keeps the app's code.
        let refused = TaskError::Codec(CodecFailure::Encode(EncodeError::Other(42)));
        assert_eq!(refused.mars_code(), (7, 42));
        let negative = TaskError::Codec(CodecFailure::Encode(EncodeError::Other(-7i32 as u32)));
        assert_eq!(negative.mars_code(), (7, -7));
        assert_eq!(
            LinkError::Decode(phobos_plugin_api::DecodeError::Other(0)).mars_code(),
            10007
        );
    }

    #[test]
    fn an_os_error_reads_as_the_system_describes_it() {
        // "OS error 24" left the user to look the number up.
        let e = TaskError::Dial(DialFailure::Io { errno: 24 }).to_string();
        assert!(e.ends_with(" (os error 24)"), "{e}");
        #[cfg(target_os = "linux")]
        assert_eq!(e, "could not connect: Too many open files (os error 24)");
        let e = SocketFailure::Io { errno: -3 }.to_string();
        assert_eq!(e, "OS error -3");
    }

    #[test]
    fn a_plugin_panic_names_the_plugin_and_carries_the_message() {
        let p = PluginPanic::new(PluginKind::Codec, "acme".into(), "decode", "boom".into());
        assert_eq!(
            p.to_string(),
            "codec plugin \"acme\" panicked in decode: boom"
        );
        // The typed errors a panicking codec leaves say so too, with Mars's codes of a
        // malformed frame and a refused encode.
        let panicked = phobos_plugin_api::panics::PLUGIN_PANICKED;
        let link = LinkError::Decode(DecodeError::Other(panicked));
        assert_eq!(
            link.to_string(),
            "malformed frame: malformed frame (the codec plugin panicked)"
        );
        assert_eq!(link.mars_code(), 10007);
        let task = TaskError::Codec(CodecFailure::Encode(EncodeError::Other(panicked)));
        assert_eq!(
            task.to_string(),
            "codec error: cannot frame request: cannot encode frame (the codec plugin panicked)"
        );
        assert_eq!(task.mars_code(), (7, -255));
    }

    #[test]
    fn display_describes_only_its_own_level() {
        assert_eq!(
            TaskError::Timeout(TimeoutLevel::PacketToPacket).to_string(),
            "packet-to-packet timeout"
        );
    }
}

//! How the driver opens sockets: the [`Connector`] trait and the default [`TcpConnector`].
//!
//! The core decides *where* to connect and *when* to give up; a connector only turns one
//! address into a byte stream. Racing several addresses is the core's job (it emits one
//! `Connect` action per attempt), so a connector never needs a timeout of its own. TLS or a
//! proxy wrap the TCP one ([`TlsConnector::over`](crate::TlsConnector::over)).
//!
//! # Socket options
//!
//! [`TcpConnector`] applies [`SocketOptions`] to each socket *before* `connect`: the MSS clamp
//! (`TCP_MAXSEG`) only shapes the MSS option of the SYN when it is set first, and keepalive and
//! `TCP_NODELAY` then hold from the first byte. The defaults follow Mars: Nagle off (Mars
//! disables it on every long link), no TCP keepalive (the long link's own heartbeat detects dead
//! links sooner and also keeps NAT entries alive), no MSS clamp; and, unlike Mars,
//! `TCP_THIN_LINEAR_TIMEOUTS` on Linux (see [`SocketOptions::thin_linear_timeouts`]). Mars
//! forces an MSS of
//! [`WIFI_MSS`] on Wi-Fi; an app that wants that gives the connector
//! `SocketOptions::default().mss(Some(WIFI_MSS))`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use phobos_plugin_api::IpPort;
use phobos_stn_proto::{CloseCause, DialError, TransportFacts};
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

/// A connected byte stream the driver can read and write.
///
/// Implemented for tokio's [`TcpStream`] (which reports `TCP_INFO` on Linux and Android),
/// for rustls client streams over any `LinkStream` (they report what the stream under them
/// does), for boxes, and for the in-memory [`DuplexStream`](tokio::io::DuplexStream). A
/// stream of your own implements it in one line, `impl LinkStream for MyStream {}`, or
/// overrides [`transport_facts`](Self::transport_facts) when it wraps a stream that can
/// tell.
pub trait LinkStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// What the transport under this stream knows about the connection's health, asked for
    /// when a heartbeat reply is overdue (see [`Recovery`](phobos_stn_proto::Recovery)):
    /// `None` (the default) when it cannot tell, and the link is judged on silence alone.
    fn transport_facts(&self) -> Option<TransportFacts> {
        None
    }

    /// A [`PeerProbe`] on the socket under this stream, which tells later, without blocking
    /// and without taking anything from the stream, whether the peer has closed the
    /// connection or sent bytes nobody has read. The driver takes one for each short-link
    /// connection that may be kept alive (the stream itself then belongs to the HTTP client)
    /// and asks it before reusing the idle connection. `None` (the default) when the stream
    /// cannot tell: the driver then goes by what the HTTP client has read.
    fn peer_probe(&self) -> Option<PeerProbe> {
        None
    }
}

impl LinkStream for TcpStream {
    fn transport_facts(&self) -> Option<TransportFacts> {
        tcp_info::facts(self)
    }

    fn peer_probe(&self) -> Option<PeerProbe> {
        PeerProbe::of_tcp(self).ok()
    }
}

impl<T: LinkStream + ?Sized> LinkStream for Box<T> {
    fn transport_facts(&self) -> Option<TransportFacts> {
        (**self).transport_facts()
    }

    fn peer_probe(&self) -> Option<PeerProbe> {
        (**self).peer_probe()
    }
}

impl<S: LinkStream> LinkStream for tokio_rustls::client::TlsStream<S> {
    fn transport_facts(&self) -> Option<TransportFacts> {
        self.get_ref().0.transport_facts()
    }

    /// The probe of the stream under TLS: any record waiting there on an idle connection (an
    /// alert such as `close_notify`, most likely) counts as bytes nobody asked for.
    fn peer_probe(&self) -> Option<PeerProbe> {
        self.get_ref().0.peer_probe()
    }
}

/// A second handle on a TCP socket that looks at what the peer sent without reading it
/// ([`LinkStream::peer_probe`]).
///
/// Design: Mars peeks at a cached keep-alive socket before reusing it, so a connection the
/// server closed while it sat idle is dropped instead of failing the next request. Here an
/// idle connection's stream belongs to hyper's connection task, and hyper only learns of a
/// FIN when tokio's reactor has reported it and that task has run; a task started in between
/// would write its request into a dead connection. The probe holds a duplicate of the
/// socket's descriptor and peeks one byte on it (non-blocking, `MSG_PEEK`): the kernel's
/// receive queue at the moment of the call, FIN and reset included, whatever tokio has
/// seen. It costs one descriptor while it lives, and the socket stays open until both
/// handles are closed, so it is kept and dropped with its connection. Unix only: elsewhere
/// [`of_tcp`](Self::of_tcp) reports [`io::ErrorKind::Unsupported`].
#[derive(Debug)]
pub struct PeerProbe {
    socket: std::net::TcpStream,
}

impl PeerProbe {
    /// A probe on `stream`'s socket.
    ///
    /// # Errors
    ///
    /// Duplicating the descriptor failed (the process has none left), or the platform has
    /// no probe.
    pub fn of_tcp(stream: &TcpStream) -> io::Result<PeerProbe> {
        let socket = duplicate(stream)?;
        // The duplicate shares the socket's flags, and tokio's sockets are non-blocking;
        // said again so that a peek can never block the driver.
        socket.set_nonblocking(true)?;
        Ok(PeerProbe { socket })
    }

    /// What the peer has done, as the kernel knows it now. Nothing is read.
    pub fn check(&self) -> PeerState {
        let mut byte = [0u8; 1];
        loop {
            return match self.socket.peek(&mut byte) {
                Ok(0) => PeerState::Closed,
                Ok(_) => PeerState::Unread,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => PeerState::Quiet,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => PeerState::Failed(errno(&e)),
            };
        }
    }
}

/// What a [`PeerProbe`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerState {
    /// Nothing waits to be read.
    Quiet,
    /// Bytes wait to be read. On an idle HTTP connection they answer no request (a server's
    /// `408` before it closes, a TLS alert).
    Unread,
    /// The peer closed its side: a FIN waits to be read.
    Closed,
    /// The socket failed (a reset, most often): its OS error number, or -1.
    Failed(i32),
}

/// A second descriptor for `stream`'s socket.
#[cfg(unix)]
fn duplicate(stream: &TcpStream) -> io::Result<std::net::TcpStream> {
    use std::os::fd::AsFd;

    Ok(std::net::TcpStream::from(
        stream.as_fd().try_clone_to_owned()?,
    ))
}

#[cfg(not(unix))]
fn duplicate(_stream: &TcpStream) -> io::Result<std::net::TcpStream> {
    Err(io::ErrorKind::Unsupported.into())
}

impl LinkStream for tokio::io::DuplexStream {}

/// `TCP_INFO`, the kernel's own view of a TCP connection.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
mod tcp_info {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use phobos_stn_proto::TransportFacts;
    use tokio::net::TcpStream;

    /// Reads the socket's `TCP_INFO`; `None` if the kernel refuses.
    pub(super) fn facts(stream: &TcpStream) -> Option<TransportFacts> {
        // SAFETY: `tcp_info` is plain old data (integers only), so all zeroes is a valid
        // value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: the descriptor is the stream's open socket, borrowed for the call; the
        // kernel writes at most `len` bytes into `info`, which is that large, and reports the
        // length it wrote back through `len`.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&raw mut info).cast(),
                &mut len,
            )
        };
        // The four facts are all in the first, oldest part of the structure.
        let needed = std::mem::offset_of!(libc::tcp_info, tcpi_last_ack_recv) + 4;
        if rc != 0 || (len as usize) < needed {
            return None;
        }
        let facts = TransportFacts::new(
            Duration::from_micros(u64::from(info.tcpi_rto)),
            info.tcpi_backoff,
            info.tcpi_unacked,
            Duration::from_millis(u64::from(info.tcpi_last_ack_recv)),
        );
        // The history fields came later (Linux 4.6); an older kernel writes less.
        let history = std::mem::offset_of!(libc::tcp_info, tcpi_data_segs_out) + 4;
        Some(if (len as usize) >= history {
            facts.with_history(info.tcpi_data_segs_out, info.tcpi_total_retrans)
        } else {
            facts
        })
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod tcp_info {
    use phobos_stn_proto::TransportFacts;
    use tokio::net::TcpStream;

    /// No `TCP_INFO` to read here.
    pub(super) fn facts(_stream: &TcpStream) -> Option<TransportFacts> {
        None
    }
}

/// Opens one connection to one address.
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// Connects to `addr`.
    ///
    /// # Errors
    ///
    /// The IO error that made the attempt fail; the driver turns it into a
    /// [`DialError`] for the core with [`dial_error`].
    async fn connect(&self, addr: IpPort) -> io::Result<Box<dyn LinkStream>>;

    /// [`connect`](Self::connect), telling `established` when the transport is up and a
    /// handshake (TLS, a proxy's) follows, so that the core can give the handshake a timeout
    /// of its own ([`Recovery::handshake_timeout`](phobos_stn_proto::Recovery)). The driver
    /// calls this one for long-link attempts.
    ///
    /// The default calls `connect` and never `established`: right for a connector without
    /// a handshake. A connector with one should override it and call `established` at most
    /// once, between its transport connect and its handshake.
    async fn connect_reporting(
        &self,
        addr: IpPort,
        established: Established,
    ) -> io::Result<Box<dyn LinkStream>> {
        let _ = established;
        self.connect(addr).await
    }
}

/// What a [`Connector::connect_reporting`] calls when its transport is up and its handshake
/// starts.
pub struct Established(Option<Box<dyn FnOnce() + Send>>);

impl Established {
    /// Runs `f` when [`report`](Self::report) is called.
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        Established(Some(Box::new(f)))
    }

    /// Reports nothing (for calling a [`Connector::connect_reporting`] outside a driver).
    pub fn ignore() -> Self {
        Established(None)
    }

    /// The transport is up and the handshake starts.
    pub fn report(mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Established")
    }
}

/// Plain TCP with [`SocketOptions`] (by default `TCP_NODELAY` on, as Mars does on every long
/// link).
///
/// ```
/// use std::time::Duration;
/// use phobos_stn::{Keepalive, SocketOptions, TcpConnector, WIFI_MSS};
///
/// let options = SocketOptions::default()
///     .keepalive(Some(Keepalive::new(Duration::from_secs(60), Duration::from_secs(10), 3)))
///     .mss(Some(WIFI_MSS));
/// let connector = TcpConnector::with_options(options).unwrap();
/// assert_eq!(connector.options().mss, Some(1400));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpConnector {
    options: SocketOptions,
}

impl TcpConnector {
    /// A connector with the default [`SocketOptions`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A connector applying `options` to every socket.
    ///
    /// # Errors
    ///
    /// [`SocketOptionsError`] when a value is outside what the kernel accepts (see
    /// [`SocketOptions::check`]), so a bad setting fails at configuration, not on every
    /// connect.
    pub fn with_options(options: SocketOptions) -> Result<Self, SocketOptionsError> {
        options.check()?;
        Ok(TcpConnector { options })
    }

    /// The options applied to each socket.
    pub fn options(&self) -> &SocketOptions {
        &self.options
    }

    /// Opens a TCP connection to `addr` with the options set before `connect`.
    ///
    /// This is what [`Connector::connect`] does, without boxing; a connector wrapping TCP (a
    /// proxy) can use it for its first hop.
    ///
    /// # Errors
    ///
    /// The IO error of creating the socket, setting an option or connecting.
    pub async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        self.options.apply(&socket)?;
        socket.set_nonblocking(true)?;
        let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
        socket.connect(addr).await
    }
}

#[async_trait]
impl Connector for TcpConnector {
    async fn connect(&self, addr: IpPort) -> io::Result<Box<dyn LinkStream>> {
        let stream = self.connect_tcp(SocketAddr::from(addr)).await?;
        Ok(Box::new(stream))
    }
}

/// The MSS Mars forces on Wi-Fi links (bytes), for [`SocketOptions::mss`].
pub const WIFI_MSS: u32 = 1400;

/// The default [`SocketOptions::notsent_lowat`]: 16 KiB, a few segments' worth, which
/// keeps a fast link's socket fed between two writes of the driver.
pub const NOTSENT_LOWAT: u32 = 16 * 1024;

/// Options [`TcpConnector`] sets on each socket before connecting.
///
/// Built from [`Default`] with the chaining setters (the fields are public to read; the type is
/// `#[non_exhaustive]` so options can be added). [`check`](Self::check) tells whether the kernel
/// would accept the values. A TLS or proxy connector keeps them by wrapping the
/// [`TcpConnector`] ([`TlsConnector::over`](crate::TlsConnector::over)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketOptions {
    /// `TCP_NODELAY`: send small writes at once instead of waiting to coalesce them (Nagle
    /// off). Default: on, because frames are small and latency matters more than packet count.
    pub nodelay: bool,
    /// TCP keepalive probes (`SO_KEEPALIVE` with `TCP_KEEPIDLE`/`TCP_KEEPINTVL`/`TCP_KEEPCNT`);
    /// `None` leaves keepalive off. Default: off (the heartbeat does this job).
    pub keepalive: Option<Keepalive>,
    /// `TCP_MAXSEG`: the largest segment to send and to ask the peer for, clamping the MSS
    /// option in the SYN. Default: none (the kernel uses the path's MTU). Mars uses
    /// [`WIFI_MSS`] on Wi-Fi, where some access points drop large segments.
    pub mss: Option<u32>,
    /// `TCP_THIN_LINEAR_TIMEOUTS` (Linux and Android; ignored elsewhere): while fewer than four
    /// segments are in flight, the kernel retransmits after a fixed RTO for the first six
    /// retransmissions instead of doubling it each time. Default: on. An IM long link is a
    /// thin stream (a few small frames at a time, so fast retransmit rarely triggers) and
    /// exponential back-off is what turns a few lost packets on a lossy network into
    /// multi-second stalls. Mars leaves it off.
    pub thin_linear_timeouts: bool,
    /// `TCP_NOTSENT_LOWAT` (Linux and Android; ignored elsewhere): the kernel takes a write
    /// only while it holds fewer than this many bytes not yet sent. `None` leaves the kernel's
    /// default (no limit: the send buffer, which grows to megabytes, takes whatever fits).
    /// Default: [`NOTSENT_LOWAT`] (16 KiB). A request's clocks start when its first byte is
    /// handed to the socket (spec §6.2); with a deep send buffer on a slow uplink, that says
    /// little about when it leaves: requests pipelined behind a large one waited there, their
    /// first-packet timeouts running, until they failed with the link. With the limit, bytes
    /// not yet sent wait in the driver, which tells the core when they go
    /// ([`Engine::handle_unsent`](phobos_stn_proto::Engine::handle_unsent)).
    pub notsent_lowat: Option<u32>,
}

impl SocketOptions {
    /// Sets [`nodelay`](Self::nodelay).
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// Sets [`keepalive`](Self::keepalive).
    pub fn keepalive(mut self, keepalive: Option<Keepalive>) -> Self {
        self.keepalive = keepalive;
        self
    }

    /// Sets [`thin_linear_timeouts`](Self::thin_linear_timeouts).
    pub fn thin_linear_timeouts(mut self, on: bool) -> Self {
        self.thin_linear_timeouts = on;
        self
    }

    /// Sets [`mss`](Self::mss).
    pub fn mss(mut self, mss: Option<u32>) -> Self {
        self.mss = mss;
        self
    }

    /// Sets [`notsent_lowat`](Self::notsent_lowat).
    pub fn notsent_lowat(mut self, lowat: Option<u32>) -> Self {
        self.notsent_lowat = lowat;
        self
    }

    /// Whether every value is in the range Linux accepts: MSS in `88..=32767`; keepalive idle
    /// time and interval whole seconds in `1..=32767`; probe count in `1..=127`; a not-sent
    /// low-water mark of at least 1 byte (0 would take no write until everything was sent)
    /// and at most `i32::MAX`.
    ///
    /// # Errors
    ///
    /// The first value out of range.
    pub fn check(&self) -> Result<(), SocketOptionsError> {
        if let Some(mss) = self.mss {
            if !(MIN_MSS..=MAX_MSS).contains(&mss) {
                return Err(SocketOptionsError::Mss(mss));
            }
        }
        if let Some(lowat) = self.notsent_lowat {
            if lowat == 0 || lowat > i32::MAX as u32 {
                return Err(SocketOptionsError::NotsentLowat(lowat));
            }
        }
        if let Some(k) = self.keepalive {
            for (what, d) in [("idle", k.idle), ("interval", k.interval)] {
                let whole = d.subsec_nanos() == 0;
                if !whole || !(1..=MAX_KEEPALIVE_SECS).contains(&d.as_secs()) {
                    return Err(SocketOptionsError::KeepaliveTime(what, d));
                }
            }
            if !(1..=MAX_KEEPALIVE_PROBES).contains(&k.count) {
                return Err(SocketOptionsError::KeepaliveCount(k.count));
            }
        }
        Ok(())
    }

    /// Sets the options on an unconnected socket.
    fn apply(&self, socket: &Socket) -> io::Result<()> {
        socket.set_tcp_nodelay(self.nodelay)?;
        if let Some(k) = self.keepalive {
            let params = TcpKeepalive::new()
                .with_time(k.idle)
                .with_interval(k.interval);
            #[cfg(not(any(windows, target_os = "openbsd", target_os = "redox")))]
            let params = params.with_retries(k.count);
            socket.set_tcp_keepalive(&params)?;
        }
        #[cfg(unix)]
        if let Some(mss) = self.mss {
            socket.set_tcp_mss(mss)?;
        }
        #[cfg(any(target_os = "android", target_os = "linux"))]
        if self.thin_linear_timeouts {
            socket.set_tcp_thin_linear_timeouts(true)?;
        }
        #[cfg(any(target_os = "android", target_os = "linux"))]
        if let Some(lowat) = self.notsent_lowat {
            socket.set_tcp_notsent_lowat(lowat)?;
        }
        Ok(())
    }
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            nodelay: true,
            keepalive: None,
            mss: None,
            thin_linear_timeouts: true,
            notsent_lowat: Some(NOTSENT_LOWAT),
        }
    }
}

/// TCP keepalive timing: the first probe after `idle` without traffic, then one every
/// `interval`; the connection is dropped after `count` unanswered probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Keepalive {
    /// Time without traffic before the first probe (`TCP_KEEPIDLE`).
    pub idle: Duration,
    /// Time between probes (`TCP_KEEPINTVL`).
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`; not settable on
    /// Windows and OpenBSD, where the system's count applies).
    pub count: u32,
}

impl Keepalive {
    /// Keepalive with these timings.
    pub fn new(idle: Duration, interval: Duration, count: u32) -> Self {
        Keepalive {
            idle,
            interval,
            count,
        }
    }
}

/// A [`SocketOptions`] value the kernel would refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SocketOptionsError {
    /// The MSS is outside `88..=32767`.
    #[error("MSS {0} is outside 88..=32767")]
    Mss(u32),
    /// A keepalive time (named) is not a whole number of seconds in `1..=32767`.
    #[error("keepalive {0} time {1:?} is not whole seconds in 1..=32767")]
    KeepaliveTime(&'static str, Duration),
    /// The keepalive probe count is outside `1..=127`.
    #[error("keepalive probe count {0} is outside 1..=127")]
    KeepaliveCount(u32),
    /// The not-sent low-water mark is 0 or above `i32::MAX`.
    #[error("not-sent low-water mark {0} is outside 1..=2147483647")]
    NotsentLowat(u32),
}

/// The core's view of a failed connect. A TLS failure (an error carrying a
/// [`TlsError`](crate::TlsError)) is [`DialError::Damaged`] when its bytes arrived damaged,
/// [`DialError::Certificate`] when the server's certificate was refused, else
/// [`DialError::Handshake`].
pub fn dial_error(err: &io::Error) -> DialError {
    if let Some(tls) = crate::TlsError::from_io(err) {
        return match tls {
            crate::TlsError::Damaged(_) => DialError::Damaged,
            t if t.is_certificate_error() => DialError::Certificate,
            _ => DialError::Handshake,
        };
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => DialError::Refused,
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => {
            DialError::Unreachable
        }
        _ => DialError::Io(errno(err)),
    }
}

/// The core's view of a failed read or write: a TLS failure is damaged bytes, an
/// unexpected EOF the peer closing, anything else its OS error.
pub fn close_cause(err: &io::Error) -> CloseCause {
    if is_tls_failure(err) {
        return CloseCause::Damaged;
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof => CloseCause::RemoteClosed,
        _ => CloseCause::Io(errno(err)),
    }
}

/// Whether `err` is rustls giving up an established session: a record that failed its
/// integrity check, a malformed message, or an alert from a peer that found one.
pub(crate) fn is_tls_failure(err: &io::Error) -> bool {
    crate::tls::rustls_error(err).is_some()
}

/// The OS error number, or -1 when the error has none.
fn errno(err: &io::Error) -> i32 {
    err.raw_os_error().unwrap_or(-1)
}

/// Linux's smallest accepted `TCP_MAXSEG` (`TCP_MIN_MSS`).
const MIN_MSS: u32 = 88;
/// Linux's largest accepted `TCP_MAXSEG` (`MAX_TCP_WINDOW`).
const MAX_MSS: u32 = 32_767;
/// Linux's limit on `TCP_KEEPIDLE` and `TCP_KEEPINTVL` (`MAX_TCP_KEEPIDLE`).
const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// Linux's limit on `TCP_KEEPCNT` (`MAX_TCP_KEEPCNT`).
const MAX_KEEPALIVE_PROBES: u32 = 127;

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)]
    fn object_safe(_: Box<dyn Connector>) {}

    #[test]
    fn io_errors_map_to_the_core_vocabulary() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(dial_error(&refused), DialError::Refused);
        let os = io::Error::from_raw_os_error(110);
        assert_eq!(dial_error(&os), DialError::Io(110));
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(close_cause(&eof), CloseCause::RemoteClosed);
        assert_eq!(close_cause(&io::Error::other("x")), CloseCause::Io(-1));
        // What tokio-rustls returns for a record that failed its check.
        let tls = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(close_cause(&tls), CloseCause::Damaged);
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac),
        );
        assert_eq!(close_cause(&alert), CloseCause::Damaged);
        let other = io::Error::new(io::ErrorKind::InvalidData, "chunk size");
        assert_eq!(close_cause(&other), CloseCause::Io(-1));
    }

    #[test]
    fn out_of_range_options_are_refused_at_configuration() {
        let secs = Duration::from_secs;
        let ok = Keepalive::new(secs(60), secs(10), 3);
        assert!(TcpConnector::with_options(SocketOptions::default().keepalive(Some(ok))).is_ok());
        let cases = [
            (
                SocketOptions::default().mss(Some(87)),
                SocketOptionsError::Mss(87),
            ),
            (
                SocketOptions::default().mss(Some(40_000)),
                SocketOptionsError::Mss(40_000),
            ),
            (
                SocketOptions::default().keepalive(Some(Keepalive::new(secs(0), secs(1), 1))),
                SocketOptionsError::KeepaliveTime("idle", secs(0)),
            ),
            (
                SocketOptions::default().keepalive(Some(Keepalive::new(
                    secs(1),
                    Duration::from_millis(1500),
                    1,
                ))),
                SocketOptionsError::KeepaliveTime("interval", Duration::from_millis(1500)),
            ),
            (
                SocketOptions::default().keepalive(Some(Keepalive::new(secs(1), secs(1), 128))),
                SocketOptionsError::KeepaliveCount(128),
            ),
        ];
        for (options, want) in cases {
            assert_eq!(TcpConnector::with_options(options), Err(want));
        }
        assert!(SocketOptions::default().mss(Some(WIFI_MSS)).check().is_ok());
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[tokio::test]
    async fn a_tcp_stream_reports_the_kernels_view_through_any_box() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            s
        });
        let mut stream: Box<dyn LinkStream> = TcpConnector::new()
            .connect(IpPort::from(addr))
            .await
            .unwrap();
        stream.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        stream.read_exact(&mut back).await.unwrap();
        let _server = server.await.unwrap();

        let facts = stream.transport_facts().expect("TCP_INFO on Linux");
        // Everything was answered, so everything was acknowledged and nothing is being
        // retransmitted; Linux never goes below its 200 ms minimum timeout.
        assert_eq!(facts.unacked, 0);
        assert_eq!(facts.backoff, 0);
        assert!(facts.rto >= Duration::from_millis(200), "{facts:?}");
        assert_eq!(facts.base_rto(), facts.rto);
        // Our one data segment, never retransmitted: a clean history.
        assert!(facts.data_segments_sent >= 1, "{facts:?}");
        assert_eq!(facts.retransmitted, 0);
        assert!(!facts.lossy_history());
    }

    #[test]
    fn a_stream_without_a_transport_cannot_tell() {
        let (a, _b) = tokio::io::duplex(64);
        let boxed: Box<dyn LinkStream> = Box::new(a);
        assert_eq!(boxed.transport_facts(), None);
        assert!(boxed.peer_probe().is_none());
    }

    /// A connected pair on loopback: (client stream, boxed as the driver holds it; server
    /// side, blocking std socket).
    #[cfg(unix)]
    async fn pair() -> (Box<dyn LinkStream>, std::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpConnector::new()
            .connect(IpPort::from(addr))
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let server = server.into_std().unwrap();
        server.set_nonblocking(false).unwrap();
        (client, server)
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_probe_sees_what_the_peer_did_without_reading_it() {
        use std::io::Write;
        use tokio::io::AsyncReadExt;

        let (mut client, mut server) = pair().await;
        let probe = client.peer_probe().expect("a probe on Unix");
        assert_eq!(probe.check(), PeerState::Quiet);
        server.write_all(b"x").unwrap();
        assert_eq!(probe.check(), PeerState::Unread);
        assert_eq!(probe.check(), PeerState::Unread, "nothing was taken");
        let mut got = [0u8; 1];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"x", "the stream still reads the byte");
        assert_eq!(probe.check(), PeerState::Quiet);
        server.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(probe.check(), PeerState::Closed);

        // A reset (the peer closed with SO_LINGER 0).
        let (client, server) = pair().await;
        let probe = client.peer_probe().unwrap();
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server);
        assert_eq!(
            probe.check(),
            PeerState::Failed(libc::ECONNRESET),
            "the reset is the socket's error"
        );
        assert_eq!(
            probe.check(),
            PeerState::Closed,
            "then the end of the stream"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_probe_keeps_the_socket_open_until_it_is_dropped_too() {
        let (client, server) = pair().await;
        server.set_nonblocking(true).unwrap();
        let probe = client.peer_probe().unwrap();
        let mut buf = [0u8; 1];
        drop(client);
        // Loopback delivers a FIN within the close call: none came.
        let err = server.peek(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "no FIN yet");
        drop(probe);
        assert_eq!(
            server.peek(&mut buf).unwrap(),
            0,
            "the FIN once both are gone"
        );
    }
}

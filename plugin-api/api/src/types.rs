//! Plain value types shared by the traits.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// A long-link command id: what the server should do with a frame's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CmdId(pub u32);

/// A long-link sequence number. Tasks use their [`TaskId`] as the sequence number; a few values
/// are reserved by the codec (push, heartbeat, identify).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seq(pub u32);

/// The id of one task, unique within a client. Never 0 and never one of the codec's reserved
/// sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId(pub u32);

impl From<TaskId> for Seq {
    fn from(id: TaskId) -> Self {
        Seq(id.0)
    }
}

impl fmt::Display for CmdId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cmd {}", self.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seq {:#010x}", self.0)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.0)
    }
}

/// An IP address and port: one place a link can connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IpPort {
    /// The address.
    pub ip: IpAddr,
    /// The TCP port.
    pub port: u16,
}

impl IpPort {
    /// Pairs an address with a port.
    pub fn new(ip: IpAddr, port: u16) -> Self {
        IpPort { ip, port }
    }

    /// True for IPv6 addresses (Mars's test: the address has no `.`).
    pub fn is_ipv6(&self) -> bool {
        self.ip.is_ipv6()
    }
}

impl From<SocketAddr> for IpPort {
    fn from(addr: SocketAddr) -> Self {
        IpPort::new(addr.ip(), addr.port())
    }
}

impl From<IpPort> for SocketAddr {
    fn from(addr: IpPort) -> Self {
        SocketAddr::new(addr.ip, addr.port)
    }
}

impl fmt::Display for IpPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&SocketAddr::from(*self), f)
    }
}

/// The kind of network the device is on, as the host app reports it.
///
/// Mars treats every network that is not mobile like Wi-Fi; the core does the same when it
/// picks Wi-Fi or mobile constants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum NetKind {
    /// No network at all.
    None,
    /// Wi-Fi.
    #[default]
    Wifi,
    /// A mobile (cellular) network: lower timeouts budgets, flow limits apply.
    Mobile,
    /// Anything else (Ethernet, unknown). Uses the Wi-Fi constants.
    Other,
}

impl NetKind {
    /// True for a mobile network, where Mars uses its larger timeouts and the flow limit.
    pub fn is_mobile(self) -> bool {
        self == NetKind::Mobile
    }

    /// True when there is some network.
    pub fn is_available(self) -> bool {
        self != NetKind::None
    }
}

/// What an address is being resolved for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LinkPurpose {
    /// A persistent long link (framed TCP/TLS).
    LongLink,
    /// A short link (one HTTP/1.1 POST per attempt).
    ShortLink,
}

/// The transport a task attempt actually used (Mars's `channel` argument: 1 short, 2 long,
/// 4 minor long).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChannelKind {
    /// The short link.
    Short,
    /// A long link.
    Long,
    /// A minor long link.
    MinorLong,
}

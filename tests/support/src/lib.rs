//! Test support for Phobos: a scriptable mock long-link server, raw frame builders and a
//! fault-injecting TCP proxy.
//!
//! Everything binds `127.0.0.1:0`, touches only loopback and waits only with `tokio::time`,
//! so tests can run under `#[tokio::test(start_paused = true)]` and never sleep for real.
//!
//! - [`mock_longlink`]: [`MockLongLinkServer`], scripted per connection ([`ConnScript`]) and per
//!   request ([`Reply`]), framing through any `Arc<dyn PacketCodec>`, recording what it got.
//! - [`frames`]: Mars frames as raw bytes, including malformed ones.
//! - [`plugins`]: [`TestAuth`] and [`StaticIpSource`], plugins that count their calls.
//! - [`proxy`]: [`FaultProxy`], per-direction latency, jitter, bandwidth, slicing, corruption,
//!   stall/close/reset after N bytes and half-open, all replayable from a seed.
//!
//! - [`mock_shortlink`]: [`MockShortLinkServer`], a tiny HTTP/1.1 server answering each
//!   request with a scripted [`ShortReply`] and recording the raw requests.
//!
//! What this crate does not do: anything outside loopback.

pub mod certs;
pub mod frames;
pub mod mock_longlink;
pub mod mock_shortlink;
pub mod plugins;
pub mod proxy;
pub mod tls_front;

pub use mock_longlink::{
    refused_addr, ClientFrameKind, ConnScript, HeartbeatMode, IdentifyMode, Malformation,
    MockLongLinkServer, ReceivedFrame, Reply, Step,
};
pub use mock_shortlink::{MockShortLinkServer, ShortReply};
pub use plugins::{StaticIpSource, TestAuth};
pub use proxy::{Direction, DirectionFaults, FaultProxy, ProxyConfig};
pub use tls_front::{TlsFront, TlsSession};

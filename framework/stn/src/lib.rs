//! The tokio driver and public API of the Phobos STN: [`Client`] (async) and
//! [`BlockingClient`] (for FFI hosts).
//!
//! The protocol lives in the sans-IO [`phobos_stn_proto::Engine`]; this crate owns one engine
//! per client inside one tokio task and does its IO: connects (through a [`Connector`]),
//! reads and writes sockets, runs the async plugins ([`IpSource`](phobos_plugin_api::IpSource),
//! [`AuthCheck::ensure_authed`](phobos_plugin_api::AuthCheck::ensure_authed)) off the loop
//! (on tokio's blocking pool when they block their thread, as loaded plugins do), and hands
//! results and pushes to the app. It makes no protocol decision: retries, address
//! choice and every timeout are the engine's.
//!
//! Only `tokio::time` is used, so under `#[tokio::test(start_paused = true)]` the whole stack
//! runs in virtual time.
//!
//! Main types:
//!
//! - [`ClientConfig`]: links, plugins, the engine's [`Config`]
//!   passthrough, connector and watchdog threshold.
//! - [`Client`]: `start_task` → [`TaskHandle`] (await it: exactly one end, the response or a
//!   [`TaskError`] whose `kind()` names the failing level), `cancel`, `subscribe_pushes`,
//!   `link_events`, `set_foreground`, `set_network`, `make_sure_connected`, `shutdown`.
//! - [`BlockingClient`]: the same on a thread of its own.
//! - [`TlsConnector`] with a [`TlsConfig`]: the long link over TLS (rustls, ring provider):
//!   SNI, webpki or custom roots, optional SPKI pins and ALPN; failures name a [`TlsError`].
//! - [`Watchdog`]: reports a blocked driver loop or plugin call (Mars's ANR check).
//! - [`metrics`]: the names recorded through the `metrics` facade. State changes are also
//!   `tracing` events carrying their reason; a task's end is an event with its profile.
//!
//! # Design notes
//!
//! - **One owner.** The engine lives inside the driver task; [`Client`] is an `Arc` around a
//!   command channel. Every IO task (connect attempt, reader, writer, resolver, login)
//!   reports over one channel, so the engine sees all inputs in one order, stamped with one
//!   clock read per wake-up.
//! - **Exactly one end per task.** Each [`TaskHandle`] owns a oneshot receiver; the engine
//!   emits one `TaskEnded` per started task (cancel included, as [`TaskError::Canceled`]).
//!   When the driver stops, dropped senders resolve the remaining handles with
//!   [`LocalError::Reset`] (Mars's teardown code −9).
//! - **Writes.** Frames the engine emits during one loop iteration are coalesced per
//!   connection and handed to the connection's writer once; the writer merges whatever is
//!   queued into one `write_all`. Reads start with a 4 KiB buffer that grows to 64 KiB while
//!   reads fill it.
//! - **Late IO is harmless.** Connections are named by the engine's `ConnId`; input from a
//!   socket the engine dropped (an `Abort`, a `Close`) is discarded by the driver and
//!   ignored by the engine.
//! - **Blocking plugins are watched**, not trusted: each `IpSource::resolve` (one source call
//!   per engine `Resolve` action; the engine walks the chain and times each call) and
//!   `AuthCheck::ensure_authed` runs in its own task under a [`Watchdog`] guard.
//! - **The IP ranking survives restarts** when [`ClientConfigBuilder::ranking_state_file`]
//!   names a file (JSON, versioned): read at start, written atomically when a link goes
//!   down, on a network change and at shutdown (off the driver loop, the newest snapshot
//!   winning; shutdown waits for the last); a corrupt or other-version file is ignored
//!   with a warning. Records unused for a day are dropped; at most 16 networks of 64
//!   addresses are kept. Each connect cycle is logged (target `phobos_stn::connect`) and
//!   rides on the link's status event as [`LinkEvent::cycle`].
//! - **Streams are lossy by design.** Pushes and link events go through `broadcast`
//!   channels (128 pushes, and 8 link events per configured link but at least 32, allocated
//!   at the first subscription); a subscriber that falls behind gets
//!   [`StreamError::Lagged`] rather than stalling the driver, and
//!   [`LinkEvents::wait_for`] takes a link's current status in place of the events it lost.
//!
//! - **Learnt heartbeat state survives restarts** when
//!   [`ClientConfigBuilder::heartbeat_state_file`] names a file: read at start, written
//!   atomically whenever a link goes down and at shutdown.
//!
//! - **The short link** (HTTP/1.1 POST per attempt, spec §8): the engine plans, races and
//!   times each attempt like the long link's connects and asks for the exchange; the driver
//!   runs it with `hyper`'s connection-level client on the stream it opened itself (so the
//!   address the engine ranked is the one used), optionally through a [`Proxy`] (HTTP
//!   CONNECT or SOCKS5, [`ClientConfigBuilder::proxy`]) and under TLS
//!   ([`ClientConfigBuilder::short_link_tls`]). A task asks for it with
//!   [`TaskSpec::with_short_link`]; `Connection: Keep-Alive` in its headers lets the driver
//!   reuse the connection (spec §8.5). Failures name their level: an HTTP status or a
//!   malformed response is [`ErrorKind::Http`] ([`HttpFailure`]), a truncated body a socket
//!   error, a stalled server a first-packet or packet-to-packet timeout.
//!
//! What it does not do (yet): the connection race in the connector (the engine races
//! attempts).
//!
//! # Example
//!
//! ```
//! # use std::sync::Arc;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use phobos_plugin_api::CmdId;
//! use phobos_stn::{Client, ClientConfig, TaskSpec};
//! use phobos_test_support::MockLongLinkServer;
//!
//! let codec = Arc::new(phobos_codec_mars::MarsCodec::default());
//! let server = MockLongLinkServer::start_echo(codec.clone()).await?;
//! let config = ClientConfig::builder(codec)
//!     .link_addrs("default-longlink", [server.ip_port()])
//!     .build()?;
//! let client = Client::start(config)?;
//! let response = client.start_task(TaskSpec::new(CmdId(7), &b"hello"[..])).await?;
//! assert_eq!(&response.body[..], b"hello");
//! client.shutdown().await;
//! # Ok(()) }
//! ```

mod batch;
mod blocking;
mod client;
mod config;
mod connector;
mod driver;
mod fanout;
mod guard;
mod handler;
mod held;
pub mod metrics;
pub mod netwatch;
mod short;
mod state_file;
mod state_writer;
mod tls;
mod watchdog;

pub use batch::{BatchEnd, EndGroup, EndGroupIter, GroupEnd, TaskBatch, TaskKeys};
pub use blocking::{BlockingClient, StartError};
pub use client::{
    Client, DriverStats, LinkEvent, LinkEvents, Push, PushStream, StreamError, TaskHandle, TaskKey,
};
pub use config::{ClientConfig, ClientConfigBuilder, DEFAULT_WATCHDOG_THRESHOLD};
pub use connector::{
    close_cause, dial_error, Connector, Established, Keepalive, LinkStream, PeerProbe, PeerState,
    SocketOptions, SocketOptionsError, TcpConnector, NOTSENT_LOWAT, WIFI_MSS,
};
pub use handler::{EndHandler, HandlerError, HandlerHandle, Starter};
#[doc(hidden)]
pub use short::fuzzing;
pub use short::{Proxy, ProxyAuth, ProxyConnector, ProxyError};
pub use tls::{
    TlsConfig, TlsConfigBuilder, TlsConfigError, TlsConnector, TlsError, TlsFailure,
    TLS_SEND_BUFFER,
};
pub use watchdog::{CallGuard, Stall, Watchdog};

pub use phobos_stn_proto::{
    ChannelSelect, Config, ConfigError, ConnectProfile, ErrorKind, LinkConfig, LinkError, LinkName,
    LinkStatus, LocalError, Response, TaskEnd, TaskError, TaskProfile, TaskSpec, TimeoutLevel,
};
pub use phobos_stn_proto::{
    EncodeContext, EncodeVia, EncodedRequest, HttpFailure, RequestEncoder, ShortLinkConfig,
    MAX_DURATION_SETTING,
};

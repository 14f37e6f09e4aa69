//! Sans-IO core of the Phobos signalling transmission network (STN): the task engine for
//! the long link and the short link.
//!
//! [`Engine`] holds the task queue, the long links and every timer. It is told what happened
//! (`handle_*`), what the app wants (`start_task`, `cancel_task`, `set_foreground`,
//! `set_network`, …) and what time it is (`now: Instant` on every input), and answers with
//! [`Action`]s for the driver, [`Event`]s for the app and the next deadline. It does no IO,
//! reads no clock, spawns nothing and takes no lock, so it runs in virtual time in tests.
//!
//! # Calling protocol
//!
//! ```text
//! loop {
//!     input ─► engine.handle_*(now, …) / start_task(now, …) / handle_timeout(now) / …
//!     while let Some(a) = engine.poll_action() { carry out a }      // in order
//!     while let Some(e) = engine.poll_event()  { deliver e }        // in order
//!     sleep until engine.poll_timeout(), or the next input           // re-arm one timer
//! }
//! ```
//!
//! After **any** input the driver drains `poll_action`, then `poll_event`, then re-arms its
//! single timer at `poll_timeout`. When that instant comes it calls `handle_timeout(now)`.
//! IO results name the [`ConnId`] of the [`Action::Connect`] they answer; the core ignores
//! stale ids, so late bytes from a dropped socket can never reach a newer connection.
//!
//! # What the core decides (the driver stays thin)
//!
//! - **Tasks**: admission and validation (§3.2), a stable priority queue, per-task retries
//!   with a 1 s pause, multi-level timeouts with Mars's formulas (connect, first packet,
//!   packet to packet, read/write, total), frequency and flow limits, zombie tasks. Every
//!   started task gets **exactly one** [`Event::TaskEnded`], cancel included
//!   ([`TaskError::Canceled`]).
//! - **Links**: one state machine per named long link: the IP source chain (one source call
//!   at a time, each with its own limit, §10) → ranked address plan (§11) → staggered connect
//!   race (RFC 8305-style by default, [`ConnectProfile`]) → identify → pipelined requests
//!   matched by sequence number → heartbeats (first one right
//!   after connect, reply timeout detected) → reconnect pacing by app state.
//! - **Short link** (§8, `engine/short.rs`): one HTTP/1.1 POST per attempt. The core plans
//!   and races the addresses exactly as for the long link (same ranking, same race rules),
//!   asks the driver to connect ([`Action::ShortConnect`]) and to run the exchange
//!   ([`Action::HttpExchange`] with the request the codec shaped), applies the same timeouts
//!   (connect, first packet, packet to packet, read/write, total) and retries, moving
//!   addresses that failed the task to the end of the next attempt's plan (§8.4). A complete
//!   response goes through the codec's `shortlink_check_response`; HTTP failures are
//!   [`TaskError::Http`] ([`HttpFailure`]).
//! - **Time**: every deadline lives in one table ([`TimerKind`]) and fires exactly, not on a
//!   1 s loop.
//!
//! # Design decisions (where this core differs from Mars on purpose)
//!
//! - **Exactly one end** per [`Engine::start_task`]: refused specs end at once,
//!   [`Engine::cancel_task`] ends the task with [`TaskError::Canceled`] (Mars's `StopTask` is
//!   silent), [`Engine::reset`] ends everything, zombies included, with
//!   [`LocalError::Reset`]. There is no silent end (Mars's `SilentTaskEnd`).
//! - **Shared fate is judged by traffic** (§6.2, §7.10). A first-packet or packet-to-packet
//!   timeout fails only its own task when the link delivered bytes for *other* frames since
//!   that task's last progress, within the packet-to-packet interval; otherwise the link is
//!   stalled and every running task fails with that timeout and the link is dropped. A
//!   read/write timeout counts any recent byte. A task's **total timeout never touches the
//!   link** or its other tasks (§18.7).
//! - **A failed connect cycle costs each waiting task one attempt**, so a dead server ends
//!   tasks with [`TaskError::Dial`] or a connect [`TimeoutLevel::Connect`] after their
//!   retries, not with a bare total timeout (Mars lets them wait).
//! - **Exact deadlines** everywhere: timeouts fire at their instant, not on a 1 s loop; the
//!   connect race notices silent addresses on time (§9); a refused address with nothing else
//!   in flight lets the next one start at once; race losers are aborted, not blamed.
//! - **Racing** ([`ConnectProfile::Phobos`], the default; [`ConnectProfile::MarsClassic`]
//!   keeps Mars's 2.5 s / 3 / 10 s race and order): attempts start a stagger apart, where the
//!   stagger is `clamp(2 × RTT, 100 ms, 2 s)` from the address's last connect time, else the
//!   network's smoothed one, else 250 ms ([`Racing`]); a failure starts the next address at
//!   once; at most 4 attempts in flight; IPv6 and IPv4 interleaved (RFC 8305 §4); every cycle
//!   is reported as [`Event::ConnectCycle`].
//! - **Recovery on weak links** ([`ConnectProfile::Phobos`] only, numbers in [`Recovery`] and
//!   [`Racing::hedges`]): once every address has started, a silent attempt is *hedged* with a
//!   fresh attempt to the same address after the stagger (a lost SYN otherwise costs the
//!   kernel's 1 s, 3 s, 7 s back-off); after a connection broke, the next one takes the
//!   backlog under a *resend window* (2 tasks, +1 per response, lifted at 16); a connection
//!   that delivered a response before breaking *reconnects at once* when tasks wait, and its
//!   retried tasks skip the retry pause (the reconnect is the pause); a task owed a response
//!   on a link quiet for `clamp(4 × rtt, 2 s, 4 s)` triggers a *stall probe* (one heartbeat):
//!   no byte within `clamp(6 × rtt, 2 s, 8 s)` drops the link and its tasks move to a new
//!   one, any byte spares it. Mars notices such a stall only at the 12 s first-packet
//!   timeout, sends the whole backlog at once and waits 5 s to reconnect.
//! - **Ranking** (§11 without its defects): Mars's 8-outcome failure register, 10 s rate
//!   limit and ban rule (≥ 3 of 8 failed, 6–30 min); ordering by failures, then oldest
//!   failure, then known success, then lowest RTT, equals in a seeded random order; a network
//!   change lifts bans, server bans included ([`Engine::ban_server`], 30 min); when bans
//!   leave nothing to try, Phobos tries the banned addresses rather than fail; persisted
//!   records ([`RankingState`]) load at start-up (§18.9) and are
//!   never banned before a new failure.
//! - **Heartbeats as intended** (§18.1, §18.2): the first one (or the identify frame) right
//!   after connect, every write restarts the interval, an unanswered heartbeat drops the link
//!   after 8 s (5 s when the slot fired ≥ 15 min late).
//! - **Reconnect pacing**: the inactive back-off moves once per connect cycle, not once per
//!   trigger (§18.12); a paced reconnect fires as armed, whichever row armed it.
//!   [`Config::has_account`] defaults to `true` so a host that never reports an account is
//!   not paced like a logged-out one (7 days when inactive).
//! - **Limits count a task once** (§18.11); **local disconnects** (network change, reset) are
//!   not reported as address failures (§18.8); the "excellent network" first-packet shortcut
//!   applies to tasks without a server cost (§18.6); a long-polling task's first-packet budget
//!   is its polling time; per-attempt timeouts feed the dynamic-timeout estimator as failures.
//! - **Auth**: one [`Action::EnsureAuth`] in flight per host; a transient failure asks again
//!   after 1 s; success lets the tasks waiting at that moment go.
//! - **No network, no attempts**: while [`NetKind::None`](phobos_plugin_api::NetKind) is
//!   reported nothing connects on its own (tasks wait, and do not lose attempts); a network
//!   coming back connects at once.
//! - **Busy links keep their heartbeat**: bytes arriving while a heartbeat reply is due move
//!   its deadline (the reply may be queued behind a long response).
//! - **A request is timed from its first byte** (§6.2, `OnSend`): the driver reports the
//!   bytes it still holds ([`Engine::handle_unsent`]); a request framed behind them starts
//!   its first-packet and read/write clocks when its first byte goes to the socket, so
//!   uploads pipelined over a slow uplink are not failed (with the link) before they leave.
//!   The socket taking held bytes shows the path alive, as received bytes do, to the stall
//!   probe and to a heartbeat reply waiting behind them.
//!
//! # What it does not do (yet), and the hooks left for it
//!
//! - **Short link extras**: per-family connect timeouts (`SetIpConnectTimeout`, §8.4) are
//!   not done; a short-link exchange is timed from its start, not from its request's first
//!   byte (hyper writes the request; the driver reports only what it reads).
//! - **Backup-IP check** (§15.3: moving a link that runs on a backup IP back to a DNS one):
//!   the ranking (`engine/ranking.rs`) and the chain walk (`engine/chain.rs`) are where it
//!   would go.
//! - **Smart heartbeat**: plugged in through
//!   [`HeartbeatPolicyFactory`](phobos_plugin_api::HeartbeatPolicyFactory) (`phobos-heartbeat`).
//! - Minor links, `channel_id`, QUIC, connection-status aggregation (§15.5), net check and task intercept (no effect on STN behaviour).

//! # Example
//!
//! One task over a fresh link, driven by hand. `t0` is whatever instant the driver counts
//! from (the core never reads a clock; `tests/quickstart.rs` runs this same flow).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use phobos_plugin_api::{FrameHead, PacketCodec, Seq};
//! use phobos_stn_proto::{Action, CmdId, Config, Engine, Event, LinkConfig, TaskSpec};
//!
//! fn quickstart(codec: Arc<dyn PacketCodec>, t0: Instant) {
//!     let addr = "10.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap().into();
//!     let config = Config::builder(codec.clone())
//!         .link(LinkConfig::new("default-longlink").addrs([addr]))
//!         .build()
//!         .unwrap();
//!     let mut engine = Engine::new(config, t0).unwrap();
//!
//!     let id = engine.start_task(t0, TaskSpec::new(CmdId(42), &b"ping"[..]));
//!     // The link is down, so the core asks for a connection.
//!     let Some(Action::Connect { attempt, .. }) = engine.poll_action() else { panic!() };
//!     engine.handle_connected(t0 + Duration::from_millis(40), attempt);
//!     // First the heartbeat, then the request.
//!     while let Some(action) = engine.poll_action() {
//!         assert!(matches!(action, Action::Send { .. }));
//!     }
//!     // The server answers task `id`.
//!     let mut reply = Vec::new();
//!     codec.encode(FrameHead::new(CmdId(42), Seq(id.0)), b"pong", &[], &mut reply).unwrap();
//!     engine.handle_bytes(t0 + Duration::from_millis(80), attempt, &reply);
//!     let end = std::iter::from_fn(|| engine.poll_event())
//!         .find_map(|e| match e {
//!             Event::TaskEnded(end) => Some(end),
//!             _ => None,
//!         })
//!         .unwrap();
//!     assert_eq!(&end.outcome.unwrap().body[..], b"pong");
//!     // Next deadline: the reply to the heartbeat sent at connect, 8 s after the last bytes.
//!     let reply_due = t0 + Duration::from_millis(80) + Duration::from_secs(8);
//!     assert_eq!(engine.poll_timeout(), Some(reply_due));
//! }
//! ```

#![deny(unsafe_code)]

mod config;
mod engine;
mod error;
mod io;
mod slab;
mod task;
mod timer;

#[cfg(test)]
mod tests;

pub use config::{
    Config, ConfigBuilder, ConfigError, ConnectProfile, FixedHeartbeat, Limits, LinkConfig, Racing,
    Recovery, ResponseCheck, ResponseVerdict, SourceRole, SourceSpec, Timing, HANDSHAKE_REDIALS,
    INSPECT_GRACE, LOSSY_RETRANSMIT_PERCENT, MAX_DURATION_SETTING, MIN_HEARTBEAT_INTERVAL,
    PATIENCE_RTOS,
};
pub use engine::{
    is_dialable, Engine, ExchangeError, HttpRequest, HttpResponse, LikeTask, ShortLinkConfig,
    MAX_SPARE_PROFILES, SHORT_LINK, SHORT_REQUEST_INVALID,
};
pub use engine::{AddrRecord, NetworkRecords, RankingState, RankingStateError};
pub use error::{
    AuthFailure, CodecFailure, DialFailure, ErrorKind, HttpFailure, LimitKind, LinkError,
    LocalError, ParamError, PluginKind, PluginPanic, SocketFailure, TaskError, TimeoutLevel,
};
pub use io::{
    Action, AttemptOutcome, AttemptReport, CloseCause, ConnId, ConnectReport, DialError, Event,
    LinkName, LinkStatus, Stats, TransportFacts, DEFAULT_LINK,
};
pub use phobos_plugin_api::{CmdId, IpPort, NetKind, TaskId};
pub use task::{
    BatchedEnd, ChannelSelect, EncodeContext, EncodeVia, EncodedRequest, EndBatch, RequestEncoder,
    Response, TaskEnd, TaskOutcome, TaskProfile, TaskSpec, DEFAULT_PRIORITY, MAX_PRIORITY,
};
pub use timer::TimerKind;

//! Network-change watcher: the kernel's address and route notifications, debounced, as
//! network changes for the client (Linux only).
//!
//! Mars learns about network changes from the platform (Android's connectivity broadcasts call
//! `OnNetworkChange`). A Linux host has no such broadcast, so [`NetWatcher`] listens on a
//! `NETLINK_ROUTE` socket to the multicast groups for IPv4/IPv6 addresses and routes
//! (`RTM_NEWADDR`, `RTM_DELADDR`, `RTM_NEWROUTE`, `RTM_DELROUTE`), keeps a [`NetState`] (global
//! addresses and main-table routes) and reports a [`NetChange`] once the notifications have
//! been quiet for [`NetWatchConfig::debounce`]: bringing an interface up produces a burst of
//! address, route and IPv6 DAD messages that must become one network change, not ten.
//!
//! With [`ClientConfigBuilder::watch_network_changes`](crate::ClientConfigBuilder::watch_network_changes),
//! the client runs a watcher in its runtime and, whenever the state's fingerprint changes,
//! does what [`Client::set_network`](crate::Client::set_network) does with
//! [`NetState::net_kind`] and [`NetState::label`]: links are dropped and reconnected, IP bans
//! lifted (spec §11.6).
//!
//! The socket is opened in the network namespace of the thread calling [`NetWatcher::bind`];
//! tests bind on a thread that has entered a namespace of their own.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use phobos_stn::netwatch::{NetWatchConfig, NetWatcher};
//!
//! let mut watcher = NetWatcher::bind(NetWatchConfig::default())?;
//! println!("now: {} addresses", watcher.state().addresses().count());
//! let change = watcher.next_change().await?;
//! println!("{} events; network available: {}", change.events.len(), change.state.is_available());
//! # Ok(()) }
//! ```

#[cfg(target_os = "linux")]
pub use linux::{
    DefaultRoute, IfAddr, NetChange, NetEvent, NetState, NetWatchConfig, NetWatcher, RouteInfo,
};

use tokio::sync::{broadcast, mpsc};

use crate::client::LinkEvent;
use crate::driver::Command;

/// Starts the client's watcher task: binds a [`NetWatcher`] in the current thread's network
/// namespace and turns each change of the state's fingerprint into a `SetNetwork` command. It
/// stops when the driver stops (its link-event stream closes). Failing to bind is logged and
/// leaves the client without a watcher.
pub(crate) fn spawn_client_watcher(
    commands: mpsc::WeakUnboundedSender<Command>,
    driver_alive: broadcast::Receiver<LinkEvent>,
) {
    #[cfg(target_os = "linux")]
    linux::spawn_client_watcher(commands, driver_alive);
    #[cfg(not(target_os = "linux"))]
    {
        drop((commands, driver_alive));
        tracing::warn!("watch_network_changes: only available on Linux; ignored");
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::{BTreeSet, VecDeque};
    use std::fmt;
    use std::io;
    use std::net::IpAddr;
    use std::time::Duration;

    use netlink_packet_core::{
        NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
    };
    use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
    use netlink_packet_route::route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteType,
    };
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_sys::protocols::NETLINK_ROUTE;
    use netlink_sys::{Socket, SocketAddr};
    use phobos_plugin_api::NetKind;
    use tokio::io::unix::AsyncFd;
    use tokio::sync::{broadcast, mpsc};
    use tokio::time::Instant;
    use tracing::{debug, info, warn, Instrument};

    use crate::client::LinkEvent;
    use crate::driver::Command;

    /// How a [`NetWatcher`] batches notifications.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct NetWatchConfig {
        /// A change is reported once no notification arrived for this long. Default 500 ms: long
        /// enough to merge an interface's burst (addresses, routes, IPv6 DAD), short next to the
        /// seconds a reconnect takes.
        pub debounce: Duration,
        /// A change is reported at the latest this long after its first notification, even if
        /// notifications keep coming (a flapping link). Default 3 s.
        pub max_delay: Duration,
        /// The socket's receive buffer in bytes (`SO_RCVBUF`; the kernel doubles it). A burst
        /// beyond it loses notifications, which the watcher repairs by re-reading the whole
        /// state. Default 256 KiB.
        pub recv_buffer: usize,
    }

    impl NetWatchConfig {
        /// Sets [`debounce`](Self::debounce).
        pub fn debounce(mut self, debounce: Duration) -> Self {
            self.debounce = debounce;
            self
        }

        /// Sets [`max_delay`](Self::max_delay).
        pub fn max_delay(mut self, max_delay: Duration) -> Self {
            self.max_delay = max_delay;
            self
        }

        /// Sets [`recv_buffer`](Self::recv_buffer).
        pub fn recv_buffer(mut self, bytes: usize) -> Self {
            self.recv_buffer = bytes;
            self
        }
    }

    impl Default for NetWatchConfig {
        fn default() -> Self {
            NetWatchConfig {
                debounce: Duration::from_millis(500),
                max_delay: Duration::from_secs(3),
                recv_buffer: RECV_BUFFER,
            }
        }
    }

    /// One global address on an interface.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct IfAddr {
        /// The interface index.
        pub index: u32,
        /// The address.
        pub addr: IpAddr,
        /// The prefix length of its subnet.
        pub prefix_len: u8,
    }

    /// One unicast route of the main routing table.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct RouteInfo {
        /// The destination network (`None` for a default route).
        pub destination: Option<IpAddr>,
        /// The destination's prefix length (0 for a default route).
        pub prefix_len: u8,
        /// Whether it is an IPv6 route.
        pub ipv6: bool,
        /// The outgoing interface index, when given.
        pub oif: Option<u32>,
        /// The next hop, when given.
        pub gateway: Option<IpAddr>,
        /// The route's metric (priority; 0 when not given).
        ///
        /// Design: with the type of service, part of what tells the kernel's routes apart.
        /// Without them, two default routes differing only in metric were one entry here:
        /// removing one of them removed the only entry, and the client took the network for
        /// gone (every link dropped, none reconnected) while a default route remained.
        pub metric: u32,
        /// The type of service the route is for (0: any).
        pub tos: u8,
    }

    impl RouteInfo {
        /// Whether this is a default route (`0.0.0.0/0` or `::/0`).
        pub fn is_default(&self) -> bool {
            self.prefix_len == 0
        }
    }

    /// A default route, as it counts in [`NetState::fingerprint`].
    pub type DefaultRoute = RouteInfo;

    /// What happened, one notification each.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum NetEvent {
        /// A global address appeared (`RTM_NEWADDR`).
        AddressAdded(IfAddr),
        /// A global address went away (`RTM_DELADDR`).
        AddressRemoved(IfAddr),
        /// A main-table route appeared (`RTM_NEWROUTE`).
        RouteAdded(RouteInfo),
        /// A main-table route went away (`RTM_DELROUTE`).
        RouteRemoved(RouteInfo),
    }

    /// The network as the watcher sees it: global addresses (no loopback, link-local or
    /// host-scope ones, and no IPv6 temporary addresses, which rotate on the same network)
    /// and main-table unicast routes.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct NetState {
        addrs: BTreeSet<IfAddr>,
        routes: BTreeSet<RouteInfo>,
    }

    impl NetState {
        /// The global addresses, ordered.
        pub fn addresses(&self) -> impl Iterator<Item = &IfAddr> + '_ {
            self.addrs.iter()
        }

        /// The main-table unicast routes, ordered.
        pub fn routes(&self) -> impl Iterator<Item = &RouteInfo> + '_ {
            self.routes.iter()
        }

        /// The default routes.
        pub fn default_routes(&self) -> impl Iterator<Item = &DefaultRoute> + '_ {
            self.routes.iter().filter(|r| r.is_default())
        }

        /// Whether there is a network: some global address and some default route.
        pub fn is_available(&self) -> bool {
            !self.addrs.is_empty() && self.default_routes().next().is_some()
        }

        /// A stable 64-bit digest (FNV-1a) of the addresses and default routes: equal for the same
        /// network, different (with overwhelming likelihood) after any change that matters.
        /// Stable across runs and builds, so it can key persisted per-network state.
        pub fn fingerprint(&self) -> u64 {
            let mut h = Fnv1a::default();
            for a in &self.addrs {
                h.write(a.index.to_be_bytes());
                h.write_ip(a.addr);
                h.write([a.prefix_len]);
            }
            h.write([0xFF]);
            // By where they lead, not their metrics: a route added or removed beside another
            // to the same place is the same network.
            let paths: std::collections::BTreeSet<_> = self
                .default_routes()
                .map(|r| (r.ipv6, r.oif, r.gateway))
                .collect();
            for (ipv6, oif, gateway) in paths {
                h.write([u8::from(ipv6)]);
                h.write(oif.unwrap_or(0).to_be_bytes());
                match gateway {
                    Some(ip) => h.write_ip(ip),
                    None => h.write([0]),
                }
            }
            h.0
        }

        /// The network kind to report: [`NetKind::None`] without a network, else
        /// [`NetKind::Other`] (netlink cannot tell Wi-Fi from mobile).
        pub fn net_kind(&self) -> NetKind {
            if self.is_available() {
                NetKind::Other
            } else {
                NetKind::None
            }
        }

        /// The network label to report: `net_<fingerprint in hex>`, or `none` without a network.
        /// Ranking history is kept per label (spec §11.4), so each address set gets its own.
        pub fn label(&self) -> String {
            if self.is_available() {
                format!("net_{:016x}", self.fingerprint())
            } else {
                "none".to_owned()
            }
        }

        /// Applies one message; returns the event when the state changed.
        fn apply(&mut self, msg: &RouteNetlinkMessage) -> Option<NetEvent> {
            match msg {
                RouteNetlinkMessage::NewAddress(m) => {
                    let a = if_addr(m)?;
                    self.addrs.insert(a).then_some(NetEvent::AddressAdded(a))
                }
                RouteNetlinkMessage::DelAddress(m) => {
                    let a = if_addr(m)?;
                    self.addrs.remove(&a).then_some(NetEvent::AddressRemoved(a))
                }
                RouteNetlinkMessage::NewRoute(m) => {
                    let r = route_info(m)?;
                    self.routes.insert(r).then_some(NetEvent::RouteAdded(r))
                }
                RouteNetlinkMessage::DelRoute(m) => {
                    let r = route_info(m)?;
                    self.routes.remove(&r).then_some(NetEvent::RouteRemoved(r))
                }
                _ => None,
            }
        }
    }

    /// A debounced batch of notifications and the state after them.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct NetChange {
        /// The state changes, in arrival order (an address added and removed within one batch
        /// shows both).
        pub events: Vec<NetEvent>,
        /// The state after the batch.
        pub state: NetState,
    }

    /// Listens to the kernel's address and route notifications (see the [module](crate::netwatch) doc).
    pub struct NetWatcher {
        socket: Sock,
        config: NetWatchConfig,
        state: NetState,
        /// Dumps still to request, in order, and the sequence number of the one running.
        dumps: VecDeque<DumpKind>,
        running_dump: Option<u32>,
        /// During a resynchronisation: what the dumps have listed so far (mark and sweep).
        resync: Option<NetState>,
        /// Notifications were lost while a dump ran: resync once it ends (the kernel runs one
        /// dump per socket at a time).
        resync_pending: bool,
        /// Dumps the kernel refused since the last it completed.
        refused: u32,
        seq: u32,
        buf: Vec<u8>,
        /// The change [`next_change`](Self::next_change) is gathering: its events so far, and
        /// when its first and latest came. Kept here, not in the call, so that a call dropped
        /// part way (a timeout, a `select!`) loses nothing: the next call goes on with it.
        pending: Vec<NetEvent>,
        pending_since: Option<(Instant, Instant)>,
    }

    impl NetWatcher {
        /// Opens the netlink socket in the calling thread's network namespace, subscribes to
        /// address and route notifications and reads the current state (a dump of addresses and
        /// routes). Needs no async runtime; [`next_change`](Self::next_change) does.
        ///
        /// # Errors
        ///
        /// The IO error of creating, binding or reading the socket.
        pub fn bind(config: NetWatchConfig) -> io::Result<Self> {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind(&SocketAddr::new(0, GROUPS))?;
            // A burst larger than the buffer loses notifications (ENOBUFS); then we resync.
            socket.set_rx_buf_sz(config.recv_buffer)?;
            let mut w = NetWatcher::on(socket, config);
            w.dumps.extend([DumpKind::Addresses, DumpKind::Routes]);
            w.next_dump()?;
            while w.running_dump.is_some() {
                let received = match &w.socket {
                    Sock::Blocking(socket) => socket.recv(&mut &mut w.buf[..], 0),
                    // Not so while bind runs; an error rather than a panic all the same.
                    _ => return Err(io::Error::other("netlink socket not blocking in bind")),
                };
                let mut ignored = Vec::new();
                w.handle_received(received, &mut ignored)?;
            }
            Ok(w)
        }

        /// A watcher on `socket` that knows nothing yet and has asked nothing.
        fn on(socket: Socket, config: NetWatchConfig) -> NetWatcher {
            NetWatcher {
                socket: Sock::Blocking(socket),
                config,
                state: NetState::default(),
                dumps: VecDeque::new(),
                running_dump: None,
                resync: None,
                resync_pending: false,
                refused: 0,
                seq: 0,
                buf: vec![0; RECV_BUFFER],
                pending: Vec::new(),
                pending_since: None,
            }
        }

        /// The current state.
        pub fn state(&self) -> &NetState {
            &self.state
        }

        /// Waits for the next change: the first notification that changes the state, then more
        /// until none came for [`NetWatchConfig::debounce`] (or [`NetWatchConfig::max_delay`]
        /// passed). Cancel-safe: the events a call dropped part way had gathered are reported
        /// by the next call.
        ///
        /// # Errors
        ///
        /// The IO error of reading the socket (a lost-notifications overrun is not an error: the
        /// watcher re-reads the whole state and reports the difference).
        ///
        /// # Panics
        ///
        /// Outside a tokio runtime with IO and time enabled.
        pub async fn next_change(&mut self) -> io::Result<NetChange> {
            self.make_async()?;
            while self.pending.is_empty() {
                self.read_some().await?;
            }
            let (first, mut last) = *self.pending_since.get_or_insert_with(|| {
                let now = Instant::now();
                (now, now)
            });
            loop {
                let deadline = (last + self.config.debounce).min(first + self.config.max_delay);
                let before = self.pending.len();
                match tokio::time::timeout_at(deadline, self.read_some()).await {
                    Err(_) => break,
                    Ok(r) => r?,
                }
                if self.pending.len() > before {
                    last = Instant::now();
                    self.pending_since = Some((first, last));
                }
            }
            self.pending_since = None;
            Ok(NetChange {
                events: std::mem::take(&mut self.pending),
                state: self.state.clone(),
            })
        }

        /// Registers the socket with the runtime on first use.
        fn make_async(&mut self) -> io::Result<()> {
            let socket = match std::mem::replace(&mut self.socket, Sock::Moving) {
                Sock::Blocking(socket) => socket,
                registered => {
                    self.socket = registered;
                    return Ok(());
                }
            };
            if let Err(e) = socket.set_non_blocking(true) {
                self.socket = Sock::Blocking(socket);
                return Err(e);
            }
            // Design: `AsyncFd::new` is deprecated for I/O safety (a registered fd closed
            // behind tokio's back); here the `AsyncFd` owns the socket, so the fd lives exactly
            // as long as the registration. The alternative, `register`, is `unsafe`.
            #[allow(deprecated)]
            let fd = AsyncFd::new(socket)?;
            self.socket = Sock::Async(fd);
            Ok(())
        }

        /// Reads one datagram when the socket has one, adding its changes to `pending`.
        /// Nothing is taken from the socket before the wait ends, so a dropped call loses
        /// nothing.
        async fn read_some(&mut self) -> io::Result<()> {
            let Sock::Async(fd) = &self.socket else {
                return Err(io::Error::other("netlink socket not registered"));
            };
            let received = loop {
                let mut guard = fd.readable().await?;
                match guard.try_io(|s| s.get_ref().recv(&mut &mut self.buf[..], 0)) {
                    Ok(r) => break r,
                    Err(_would_block) => continue,
                }
            };
            let mut events = std::mem::take(&mut self.pending);
            let handled = self.handle_received(received, &mut events);
            self.pending = events;
            handled
        }

        /// Handles the outcome of one `recv`.
        fn handle_received(
            &mut self,
            received: io::Result<usize>,
            events: &mut Vec<NetEvent>,
        ) -> io::Result<()> {
            match received {
                Ok(n) => self.handle_datagram(n, events),
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    warn!("netlink notifications were lost; re-reading the network state");
                    if self.running_dump.is_some() {
                        self.resync_pending = true;
                        Ok(())
                    } else {
                        self.start_resync()
                    }
                }
                Err(e) => Err(e),
            }
        }

        /// Applies every message of one datagram.
        fn handle_datagram(&mut self, len: usize, events: &mut Vec<NetEvent>) -> io::Result<()> {
            let mut offset = 0;
            let mut address_removed = false;
            while offset < len {
                let bytes = &self.buf[offset..len];
                let msg = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
                    Ok(m) => m,
                    Err(e) => {
                        // A message type this crate does not know: skip the rest of the datagram.
                        debug!(error = %e, "undecodable netlink message skipped");
                        break;
                    }
                };
                let msg_len = msg.header.length as usize;
                let seq = msg.header.sequence_number;
                match msg.payload {
                    NetlinkPayload::InnerMessage(inner) => {
                        if let Some(seen) = &mut self.resync {
                            seen.apply(&inner);
                        }
                        if let Some(ev) = self.state.apply(&inner) {
                            address_removed |= matches!(ev, NetEvent::AddressRemoved(_));
                            events.push(ev);
                        }
                    }
                    NetlinkPayload::Done(_) | NetlinkPayload::Error(_)
                        if Some(seq) == self.running_dump =>
                    {
                        self.running_dump = None;
                        match &msg.payload {
                            NetlinkPayload::Error(e) if e.code.is_some() => {
                                // A refused dump (say EBUSY): the listing is incomplete.
                                self.refused += 1;
                                if self.refused >= MAX_REFUSED_DUMPS {
                                    return Err(io::Error::other(format!(
                                        "the kernel refused {} netlink dumps in a row (last: {:?})",
                                        self.refused, e.code
                                    )));
                                }
                                warn!(code = ?e.code, "netlink dump refused; retrying");
                                self.resync_pending = true;
                            }
                            _ => self.refused = 0,
                        }
                        if std::mem::take(&mut self.resync_pending) {
                            self.start_resync()?;
                        } else {
                            self.next_dump()?;
                            if self.running_dump.is_none() {
                                self.finish_resync(events);
                            }
                        }
                    }
                    _ => {}
                }
                if msg_len == 0 {
                    break;
                }
                offset += msg_len;
            }
            // The kernel removes the routes through an address it removes without saying so
            // (no `RTM_DELROUTE`): re-read the state. Before, such a default route stayed
            // here, the network counted as available without one, and its label carried a
            // route long gone.
            if address_removed {
                if self.running_dump.is_some() {
                    self.resync_pending = true;
                } else {
                    self.start_resync()?;
                }
            }
            Ok(())
        }

        /// Starts over: dump everything again and drop what the dumps do not list.
        fn start_resync(&mut self) -> io::Result<()> {
            self.resync = Some(NetState::default());
            self.dumps.clear();
            self.dumps.extend([DumpKind::Addresses, DumpKind::Routes]);
            self.running_dump = None;
            self.next_dump()
        }

        /// After the last dump of a resync: removes what the dumps no longer listed.
        fn finish_resync(&mut self, events: &mut Vec<NetEvent>) {
            let Some(seen) = self.resync.take() else {
                return;
            };
            for a in self.state.addrs.difference(&seen.addrs) {
                events.push(NetEvent::AddressRemoved(*a));
            }
            for r in self.state.routes.difference(&seen.routes) {
                events.push(NetEvent::RouteRemoved(*r));
            }
            self.state = seen;
        }

        /// Sends the next queued dump request, if any.
        fn next_dump(&mut self) -> io::Result<()> {
            let Some(kind) = self.dumps.pop_front() else {
                return Ok(());
            };
            self.seq = self.seq.wrapping_add(1).max(1);
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            header.sequence_number = self.seq;
            let request = match kind {
                DumpKind::Addresses => RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                DumpKind::Routes => RouteNetlinkMessage::GetRoute(RouteMessage::default()),
            };
            let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(request));
            packet.finalize();
            let mut bytes = vec![0; packet.buffer_len()];
            packet.serialize(&mut bytes);
            let kernel = SocketAddr::new(0, 0);
            match &self.socket {
                Sock::Blocking(s) => s.send_to(&bytes, &kernel, 0)?,
                Sock::Async(fd) => fd.get_ref().send_to(&bytes, &kernel, 0)?,
                Sock::Moving => return Err(io::Error::other("netlink socket in transition")),
            };
            self.running_dump = Some(self.seq);
            Ok(())
        }
    }

    impl fmt::Debug for NetWatcher {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("NetWatcher")
                .field("config", &self.config)
                .field("state", &self.state)
                .finish_non_exhaustive()
        }
    }

    /// The client's watcher task (see [`super::spawn_client_watcher`]).
    pub(super) fn spawn_client_watcher(
        commands: mpsc::WeakUnboundedSender<Command>,
        mut driver_alive: broadcast::Receiver<LinkEvent>,
    ) {
        let mut watcher = match NetWatcher::bind(NetWatchConfig::default()) {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "watch_network_changes: cannot open a netlink socket; not watching");
                return;
            }
        };
        tokio::spawn(async move {
            let mut reported = watcher.state().fingerprint();
            loop {
                // Design: the change being gathered is kept across the driver's link events
                // (which only tell whether the driver is still there). Dropped at each one,
                // a burst that had been read was lost: the state had changed, but the next
                // `next_change` waited for another notification before returning, and a
                // network change made while a link reported anything was never reported.
                let change = {
                    let next = watcher.next_change();
                    tokio::pin!(next);
                    loop {
                        tokio::select! {
                            change = &mut next => break change,
                            alive = driver_alive.recv() => {
                                if let Err(broadcast::error::RecvError::Closed) = alive {
                                    return;
                                }
                            }
                        }
                    }
                };
                let change = match change {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(error = %e, "network watcher stopped");
                        return;
                    }
                };
                let fingerprint = change.state.fingerprint();
                if fingerprint == reported {
                    debug!(events = change.events.len(), "netlink changes without effect");
                    continue;
                }
                reported = fingerprint;
                let (kind, label) = (change.state.net_kind(), change.state.label());
                info!(?kind, label = %label, events = change.events.len(), "network changed (netlink)");
                let Some(commands) = commands.upgrade() else {
                    return;
                };
                if commands.send(Command::SetNetwork { kind, label }).is_err() {
                    return;
                }
            }
        }.in_current_span());
    }

    /// The socket, blocking until the first `next_change`, then registered with tokio.
    enum Sock {
        Blocking(Socket),
        Async(AsyncFd<Socket>),
        /// Only while switching from one to the other.
        Moving,
    }

    #[derive(Clone, Copy, Debug)]
    enum DumpKind {
        Addresses,
        Routes,
    }

    /// The global address of an address message, if it is one we track.
    fn if_addr(m: &AddressMessage) -> Option<IfAddr> {
        if m.header.scope != AddressScope::Universe {
            return None;
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
        // links and the same as IFA_LOCAL elsewhere.
        let local = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        let addr = local.or(address)?;
        if addr.is_loopback() || is_link_local(addr) {
            return None;
        }
        // Design: an IPv6 temporary (privacy) address is replaced about once a day, and the
        // old one removed days later, on the same network. Tracked, each of those changed the
        // fingerprint: every link was dropped and the label (which keys the smart heartbeat's
        // learning and the IP ranking) started afresh. The stable address it is made from
        // stays, so the network is still seen. IFA_FLAGS (32 bits) supersedes the header's
        // 8-bit copy.
        let flags = m
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Flags(f) => Some(f.bits()),
                _ => None,
            })
            .unwrap_or(u32::from(m.header.flags.bits()));
        if addr.is_ipv6() && flags & IFA_F_TEMPORARY != 0 {
            return None;
        }
        Some(IfAddr {
            index: m.header.index,
            addr,
            prefix_len: m.header.prefix_len,
        })
    }

    /// The route of a route message, if it is a main-table unicast route we track.
    fn route_info(m: &RouteMessage) -> Option<RouteInfo> {
        let table = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(m.header.table));
        if table != u32::from(RouteHeader::RT_TABLE_MAIN)
            || m.header.kind != RouteType::Unicast
            || m.header.flags.contains(RouteFlags::Cloned)
        {
            return None;
        }
        let ip = |a: &RouteAddress| match a {
            RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
            RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
            _ => None,
        };
        let mut info = RouteInfo {
            destination: None,
            prefix_len: m.header.destination_prefix_length,
            ipv6: m.header.address_family == netlink_packet_route::AddressFamily::Inet6,
            oif: None,
            gateway: None,
            metric: 0,
            tos: m.header.tos,
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => info.destination = ip(d),
                RouteAttribute::Gateway(g) => info.gateway = ip(g),
                RouteAttribute::Oif(i) => info.oif = Some(*i),
                RouteAttribute::Priority(p) => info.metric = *p,
                _ => {}
            }
        }
        // IPv6 routes to multicast and link-local prefixes come and go with every interface.
        if let Some(d) = info.destination {
            if d.is_multicast() || is_link_local(d) {
                return None;
            }
        }
        Some(info)
    }

    fn is_link_local(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xFFC0) == 0xFE80,
        }
    }

    /// 64-bit FNV-1a: small, stable across builds (unlike `DefaultHasher`).
    struct Fnv1a(u64);

    impl Default for Fnv1a {
        fn default() -> Self {
            Fnv1a(0xCBF2_9CE4_8422_2325)
        }
    }

    impl Fnv1a {
        fn write(&mut self, bytes: impl AsRef<[u8]>) {
            for b in bytes.as_ref() {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
            }
        }

        fn write_ip(&mut self, ip: IpAddr) {
            match ip {
                IpAddr::V4(v4) => self.write(v4.octets()),
                IpAddr::V6(v6) => self.write(v6.octets()),
            }
        }
    }

    /// `RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE`.
    const GROUPS: u32 = 0x10 | 0x40 | 0x100 | 0x400;
    /// The default receive buffer, and the size of one read (a datagram never exceeds it).
    const RECV_BUFFER: usize = 256 * 1024;
    /// `IFA_F_TEMPORARY`: an IPv6 temporary (privacy) address (for IPv4 the same bit means
    /// `IFA_F_SECONDARY`, a further address in a subnet the interface already has).
    const IFA_F_TEMPORARY: u32 = 0x01;
    /// Linux's "no buffer space": the kernel dropped notifications for this socket.
    const ENOBUFS: i32 = 105;

    /// Dumps refused in a row (none completed between them) after which the watcher gives
    /// up with an error rather than ask again without end: a kernel or security policy that
    /// refuses every dump held [`NetWatcher::bind`] (and so `Client::start`) in a loop.
    const MAX_REFUSED_DUMPS: u32 = 8;

    #[cfg(test)]
    mod tests {
        use netlink_packet_route::address::AddressHeaderFlags;

        use super::*;

        fn addr(index: u32, ip: &str) -> IfAddr {
            IfAddr {
                index,
                addr: ip.parse().unwrap(),
                prefix_len: 24,
            }
        }

        fn default_route(oif: u32) -> RouteInfo {
            RouteInfo {
                destination: None,
                prefix_len: 0,
                ipv6: false,
                oif: Some(oif),
                gateway: Some("10.0.0.1".parse().unwrap()),
                metric: 0,
                tos: 0,
            }
        }

        #[test]
        fn availability_needs_an_address_and_a_default_route() {
            let mut s = NetState::default();
            assert_eq!((s.net_kind(), s.label().as_str()), (NetKind::None, "none"));
            s.addrs.insert(addr(2, "10.0.0.5"));
            assert!(!s.is_available());
            s.routes.insert(default_route(2));
            assert!(s.is_available());
            assert_eq!(s.net_kind(), NetKind::Other);
            assert!(s.label().starts_with("net_") && s.label().len() == 20);
        }

        #[test]
        fn a_second_default_route_differing_only_in_metric_is_the_same_network() {
            let mut s = NetState::default();
            s.addrs.insert(addr(2, "10.0.0.5"));
            s.routes.insert(default_route(2));
            let label = s.label();
            let backup = RouteInfo {
                metric: 600,
                ..default_route(2)
            };
            assert!(s.routes.insert(backup), "two kernel routes, two entries");
            assert_eq!(s.label(), label);
            s.routes.remove(&backup);
            assert!(s.is_available());
            assert_eq!(s.label(), label);
        }

        #[test]
        fn fingerprint_follows_addresses_and_default_routes_only() {
            let mut a = NetState::default();
            a.addrs.insert(addr(2, "10.0.0.5"));
            a.routes.insert(default_route(2));
            let base = a.fingerprint();
            assert_eq!(base, a.clone().fingerprint(), "deterministic");
            let mut b = a.clone();
            b.routes.insert(RouteInfo {
                destination: Some("10.0.0.0".parse().unwrap()),
                prefix_len: 24,
                ..default_route(2)
            });
            assert_eq!(b.fingerprint(), base, "a prefix route is not a new network");
            let mut c = a.clone();
            c.addrs.insert(addr(3, "192.168.1.9"));
            assert_ne!(c.fingerprint(), base);
            let mut d = a.clone();
            d.routes.clear();
            d.routes.insert(default_route(3));
            assert_ne!(d.fingerprint(), base);
            // Pinned value: the label keys persisted state, so the digest must never drift.
            assert_eq!(NetState::default().fingerprint(), 0xAF64_724C_8602_EB6E);
        }

        fn address_message(ip: &str, flags: Option<u32>) -> AddressMessage {
            use netlink_packet_route::address::AddressFlags;
            use netlink_packet_route::AddressFamily;
            let ip: IpAddr = ip.parse().unwrap();
            let mut m = AddressMessage::default();
            m.header.family = if ip.is_ipv6() {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            };
            m.header.prefix_len = 64;
            m.header.scope = AddressScope::Universe;
            m.header.index = 2;
            m.attributes.push(AddressAttribute::Address(ip));
            if let Some(bits) = flags {
                m.attributes
                    .push(AddressAttribute::Flags(AddressFlags::from_bits_retain(
                        bits,
                    )));
            }
            m
        }

        /// A privacy address rotating on the same network (a new one about daily, the old
        /// one removed days later) changes neither the state nor the label.
        #[test]
        fn ipv6_temporary_addresses_do_not_change_the_network() {
            let mut s = NetState::default();
            let stable = address_message("2001:db8::5", Some(0x80 | 0x100));
            let added = s.apply(&RouteNetlinkMessage::NewAddress(stable));
            assert!(matches!(added, Some(NetEvent::AddressAdded(_))));
            s.routes.insert(RouteInfo {
                ipv6: true,
                gateway: Some("2001:db8::1".parse().unwrap()),
                ..default_route(2)
            });
            let label = s.label();
            for temporary in ["2001:db8::a1b2:c3d4", "2001:db8::e5f6:7788"] {
                let new = address_message(temporary, Some(IFA_F_TEMPORARY));
                assert_eq!(s.apply(&RouteNetlinkMessage::NewAddress(new.clone())), None);
                assert_eq!(s.label(), label, "{temporary} added");
                assert_eq!(s.apply(&RouteNetlinkMessage::DelAddress(new)), None);
            }
            // The header's 8-bit flags say the same when IFA_FLAGS is absent.
            let mut old_kernel = address_message("2001:db8::99", None);
            old_kernel.header.flags = AddressHeaderFlags::Secondary;
            assert_eq!(if_addr(&old_kernel), None);
            assert_eq!(s.label(), label);
            // For IPv4 the bit means a secondary address: a real one.
            let secondary = address_message("10.0.0.6", Some(IFA_F_TEMPORARY));
            assert!(if_addr(&secondary).is_some());
        }

        /// A watcher on an unbound netlink socket, with a dump of sequence number 1 running.
        fn watcher_with_a_dump_running() -> NetWatcher {
            let socket = Socket::new(NETLINK_ROUTE).unwrap();
            let mut w = NetWatcher::on(socket, NetWatchConfig::default());
            (w.running_dump, w.seq) = (Some(1), 1);
            w
        }

        /// Puts the kernel's answer to dump `seq` in the watcher's buffer, as `recv` would:
        /// an error with `code`, or the dump's end; returns its length.
        fn answer(w: &mut NetWatcher, seq: u32, code: Option<i32>) -> usize {
            let mut header = NetlinkHeader::default();
            header.sequence_number = seq;
            let payload = match code {
                Some(code) => {
                    let mut e = netlink_packet_core::ErrorMessage::default();
                    e.code = std::num::NonZeroI32::new(code);
                    NetlinkPayload::<RouteNetlinkMessage>::Error(e)
                }
                None => NetlinkPayload::Done(netlink_packet_core::DoneMessage::default()),
            };
            let mut msg = NetlinkMessage::new(header, payload);
            msg.finalize();
            let len = msg.buffer_len();
            msg.serialize(&mut w.buf[..len]);
            len
        }

        /// A dump refused again and again (say by a security policy) ends in an error after
        /// a few tries; the watcher asked again for ever, and `bind` never returned.
        #[test]
        fn dumps_refused_again_and_again_end_in_an_error() {
            const EBUSY: i32 = -16;
            let mut w = watcher_with_a_dump_running();
            let mut events = Vec::new();
            let mut tries = 0;
            let error = loop {
                tries += 1;
                assert!(tries <= 100, "still asking after {tries} refusals");
                let seq = w.running_dump.expect("asked again");
                let len = answer(&mut w, seq, Some(EBUSY));
                if let Err(e) = w.handle_datagram(len, &mut events) {
                    break e;
                }
            };
            assert_eq!(tries, MAX_REFUSED_DUMPS as usize);
            assert!(error.to_string().contains("refused"), "{error}");
            // A dump that completes between refusals starts the count again.
            let mut w = watcher_with_a_dump_running();
            for _ in 0..3 * MAX_REFUSED_DUMPS {
                let seq = w.running_dump.expect("a dump runs");
                let len = answer(&mut w, seq, Some(EBUSY));
                w.handle_datagram(len, &mut events).unwrap();
                let seq = w.running_dump.expect("asked again");
                let len = answer(&mut w, seq, None);
                w.handle_datagram(len, &mut events).unwrap();
                if w.running_dump.is_none() {
                    w.running_dump = Some(w.seq);
                }
            }
        }

        #[test]
        fn link_local_and_loopback_are_not_tracked() {
            for ip in ["fe80::1", "169.254.1.1", "127.0.0.1", "::1"] {
                assert!(
                    is_link_local(ip.parse().unwrap())
                        || ip.parse::<IpAddr>().unwrap().is_loopback()
                );
            }
            assert!(!is_link_local("fec0::1".parse().unwrap()));
        }
    }
}

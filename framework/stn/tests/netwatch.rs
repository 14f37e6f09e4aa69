//! The netlink network watcher, in a network namespace each test creates (`ip netns add`),
//! with a veth pair inside it. The watcher binds on a thread that has entered the namespace
//! (`setns`), so the root namespace's interfaces are never touched. Needs root (CI is root);
//! skipped with a printed reason otherwise.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::NetKind;
use phobos_stn::netwatch::{NetChange, NetEvent, NetWatchConfig, NetWatcher};
use phobos_stn::{Client, ClientConfig, LinkError, LinkEvents, LinkStatus};
use phobos_test_support::MockLongLinkServer;

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace with `lo` up and a veth pair `v0`/`v1` up, or `None` (with the
    /// reason printed) when namespaces cannot be made here.
    ///
    /// # Panics
    ///
    /// When they cannot and `PHOBOS_LAB_REQUIRED` is set (CI sets it when root): there a
    /// skip would pass the tests without running them.
    fn create() -> Option<Netns> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let skip = |reason: String| {
            if std::env::var_os("PHOBOS_LAB_REQUIRED").is_some() {
                panic!("PHOBOS_LAB_REQUIRED is set but no network namespace can be made: {reason}");
            }
            println!("skipped: {reason}");
        };
        if !is_root() {
            skip("network namespaces need root".into());
            return None;
        }
        let name = format!(
            "phobos-nw-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip").args(["netns", "add", &name]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                skip(format!(
                    "`ip netns add` failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
                return None;
            }
            Err(e) => {
                skip(format!("cannot run `ip`: {e}"));
                return None;
            }
        }
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        ns.ip(&["link", "set", "v0", "up"]);
        ns.ip(&["link", "set", "v1", "up"]);
        Some(ns)
    }

    /// Runs `ip -n <ns> args…` and requires success.
    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `ip -n <ns> -batch -` with `commands` on stdin and requires success.
    fn ip_batch(&self, commands: &str) {
        use std::io::Write as _;
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run ip");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(commands.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "ip -batch failed");
    }

    /// Runs `f` on a thread inside the namespace, with a current-thread tokio runtime.
    fn run<T: Send>(&self, f: impl AsyncFnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).expect("open namespace");
                setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(f())
            })
            .join()
            .expect("namespace thread")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn config() -> NetWatchConfig {
    NetWatchConfig::default().debounce(Duration::from_millis(50))
}

/// Changes until one satisfies `done`; a hang guard (not a timing assertion) stops a broken
/// watcher from blocking the suite.
async fn until(w: &mut NetWatcher, mut done: impl FnMut(&NetChange) -> bool) -> Vec<NetChange> {
    let mut seen = Vec::new();
    loop {
        let change = tokio::time::timeout(Duration::from_secs(30), w.next_change())
            .await
            .expect("no network change reported")
            .expect("netlink read");
        let stop = done(&change);
        seen.push(change);
        if stop {
            return seen;
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn added(c: &NetChange, want: IpAddr) -> bool {
    c.events
        .iter()
        .any(|e| matches!(e, NetEvent::AddressAdded(a) if a.addr == want))
}

fn removed(c: &NetChange, want: IpAddr) -> bool {
    c.events
        .iter()
        .any(|e| matches!(e, NetEvent::AddressRemoved(a) if a.addr == want))
}

#[test]
fn an_address_added_and_removed_in_the_namespace_is_reported() {
    let Some(ns) = Netns::create() else { return };
    ns.run(async || {
        let mut w = NetWatcher::bind(config()).unwrap();
        let a = ip("10.77.0.1");
        assert!(w.state().addresses().all(|x| x.addr != a));
        ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "v0"]);
        let seen = until(&mut w, |c| added(c, a)).await;
        let last = seen.last().unwrap();
        let entry = last.state.addresses().find(|x| x.addr == a).unwrap();
        assert_eq!(entry.prefix_len, 24);
        // The prefix route comes with the address.
        assert!(last
            .state
            .routes()
            .any(|r| r.destination == Some(ip("10.77.0.0"))));

        ns.ip(&["addr", "del", "10.77.0.1/24", "dev", "v0"]);
        let seen = until(&mut w, |c| removed(c, a)).await;
        assert!(seen.last().unwrap().state.addresses().all(|x| x.addr != a));
        assert!(w.state().addresses().all(|x| x.addr != a));
    });
}

#[test]
fn the_initial_state_lists_existing_addresses_but_not_loopback() {
    let Some(ns) = Netns::create() else { return };
    ns.ip(&["addr", "add", "10.78.0.1/24", "dev", "v0"]);
    ns.ip(&["addr", "add", "fd00:78::1/64", "dev", "v0", "nodad"]);
    ns.run(async || {
        let w = NetWatcher::bind(config()).unwrap();
        let addrs: Vec<IpAddr> = w.state().addresses().map(|a| a.addr).collect();
        assert!(addrs.contains(&ip("10.78.0.1")), "{addrs:?}");
        assert!(addrs.contains(&ip("fd00:78::1")), "{addrs:?}");
        assert!(addrs.iter().all(|a| !a.is_loopback()), "{addrs:?}");
        // No default route yet: no network.
        assert!(!w.state().is_available());
        assert_eq!(w.state().net_kind(), NetKind::None);
    });
}

/// IPv6 privacy addresses (the kernel makes one beside each `mngtmpaddr` address while
/// `use_tempaddr` is on, and replaces it about daily on the same network) are not part of the
/// network: neither one appearing nor one going away is a change.
#[test]
fn ipv6_temporary_addresses_are_not_tracked() {
    let Some(ns) = Netns::create() else { return };
    // No duplicate address detection: the kernel announces an address only once it is
    // done, and the temporary address must be announced before the test removes it.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "sysctl", "-qw"])
        .args([
            "net.ipv6.conf.v0.use_tempaddr=2",
            "net.ipv6.conf.v0.accept_dad=0",
        ])
        .output()
        .expect("run sysctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ns.run(async || {
        let mut w = NetWatcher::bind(config()).unwrap();
        let stable = ip("2001:db8:81::5");
        ns.ip(&[
            "addr",
            "add",
            "2001:db8:81::5/64",
            "dev",
            "v0",
            "mngtmpaddr",
            "nodad",
            "valid_lft",
            "3600",
            "preferred_lft",
            "1800",
        ]);
        let listed = Command::new("ip")
            .args([
                "-n",
                &ns.name,
                "-6",
                "-o",
                "addr",
                "show",
                "dev",
                "v0",
                "temporary",
            ])
            .output()
            .expect("run ip");
        let listed = String::from_utf8_lossy(&listed.stdout);
        let temporary: Vec<IpAddr> = listed
            .split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .map(ip)
            .into_iter()
            .collect();
        assert_eq!(
            temporary.len(),
            1,
            "the kernel made a temporary address: {listed}"
        );
        let temporary = temporary[0];
        let mut seen = until(&mut w, |c| added(c, stable)).await;
        // The address going away (as the old one does days after its replacement came),
        // then a real change to know the watcher has read past it.
        ns.ip(&["addr", "del", &format!("{temporary}/64"), "dev", "v0"]);
        ns.ip(&["addr", "add", "10.81.0.1/24", "dev", "v0"]);
        seen.extend(until(&mut w, |c| added(c, ip("10.81.0.1"))).await);
        for change in &seen {
            assert!(
                !added(change, temporary) && !removed(change, temporary),
                "{temporary} was reported: {:?}",
                change.events
            );
            assert!(change.state.addresses().all(|a| a.addr != temporary));
        }
    });
}

#[test]
fn a_burst_becomes_one_change() {
    let Some(ns) = Netns::create() else { return };
    ns.run(async || {
        let mut w = NetWatcher::bind(config()).unwrap();
        // All three are queued on the socket before the watcher reads: one debounced batch.
        for a in ["10.79.0.1/24", "10.79.1.1/24", "10.79.2.1/24"] {
            ns.ip(&["addr", "add", a, "dev", "v0"]);
        }
        let change = w.next_change().await.unwrap();
        for a in ["10.79.0.1", "10.79.1.1", "10.79.2.1"] {
            assert!(
                added(&change, ip(a)),
                "{a} missing from {:?}",
                change.events
            );
        }
    });
}

#[test]
fn a_default_route_makes_the_network_available_and_changes_the_label() {
    let Some(ns) = Netns::create() else { return };
    ns.ip(&["addr", "add", "10.80.0.1/24", "dev", "v0"]);
    ns.run(async || {
        let mut w = NetWatcher::bind(config()).unwrap();
        assert_eq!(w.state().label(), "none");
        ns.ip(&["route", "add", "default", "via", "10.80.0.2", "dev", "v0"]);
        let seen = until(&mut w, |c| c.state.is_available()).await;
        let state = &seen.last().unwrap().state;
        assert_eq!(state.net_kind(), NetKind::Other);
        let label = state.label();
        assert!(label.starts_with("net_"), "{label}");
        let route = state.default_routes().next().unwrap();
        assert_eq!(route.gateway, Some(ip("10.80.0.2")));

        // Another address on the same network: a different label (a different address set).
        ns.ip(&["addr", "add", "10.80.0.9/24", "dev", "v0"]);
        let seen = until(&mut w, |c| added(c, ip("10.80.0.9"))).await;
        assert_ne!(seen.last().unwrap().state.label(), label);

        ns.ip(&["route", "del", "default"]);
        let seen = until(&mut w, |c| !c.state.is_available()).await;
        assert!(seen
            .last()
            .unwrap()
            .events
            .iter()
            .any(|e| matches!(e, NetEvent::RouteRemoved(r) if r.is_default())));
        assert_eq!(w.state().net_kind(), NetKind::None);
    });
}

#[test]
fn a_watching_client_reconnects_when_the_namespace_network_changes() {
    let Some(ns) = Netns::create() else { return };
    ns.run(async || {
        let (server, client, mut events) = watching_client(&["default-longlink"]).await;
        // A new address and default route: the watcher reports a new network, the link is
        // dropped for it and comes back.
        new_network(&ns, 81);
        let down = network_change(&mut events).await;
        assert!(!matches!(down.status, LinkStatus::Connected(_)), "{down:?}");
        tokio::time::timeout(Duration::from_secs(30), server.wait_for_connections(2))
            .await
            .expect("the link reconnected");
        client.shutdown().await;
    });
}

/// A link event while the watcher gathers a burst of changes (its debounce) does not lose
/// them: another link of the client drops inside the window, and the network change still
/// reaches the driver. (The watcher dropped the burst it had read at the link event, and with
/// netlink quiet after it, never reported the change.)
#[test]
fn a_link_event_while_the_watcher_gathers_a_change_does_not_lose_it() {
    let Some(ns) = Netns::create() else { return };
    ns.run(async || {
        let (server, client, mut events) = watching_client(&["default-longlink", "other"]).await;
        new_network(&ns, 82);
        // Inside the watcher's 500 ms debounce (it began when the first notification was
        // read): the server drops the second link, an event the watcher also hears.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(server.close(1));
        network_change(&mut events).await;
        client.shutdown().await;
    });
}

/// An echo server on the namespace's own loopback, and a client watching the network whose
/// `links` are connected to it (one connection each, in order), with its link events.
async fn watching_client(links: &[&str]) -> (MockLongLinkServer, Client, LinkEvents) {
    let codec = Arc::new(MarsCodec::default());
    let server = MockLongLinkServer::start_echo(codec.clone()).await.unwrap();
    let config = links
        .iter()
        .fold(ClientConfig::builder(codec), |b, l| {
            b.link_addrs(*l, [server.ip_port()])
        })
        .watch_network_changes(true)
        .build()
        .unwrap();
    assert!(config.watches_network_changes());
    let client = Client::start(config).unwrap();
    let events = client.link_events();
    client.set_foreground(true);
    for (n, link) in links.iter().enumerate() {
        client.make_sure_connected(*link);
        server.wait_for_connections(n + 1).await;
    }
    (server, client, events)
}

/// A new network in `ns`: an address and a default route in `10.<subnet>.0.0/24`.
fn new_network(ns: &Netns, subnet: u8) {
    ns.ip(&["addr", "add", &format!("10.{subnet}.0.1/24"), "dev", "v0"]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        &format!("10.{subnet}.0.2"),
        "dev",
        "v0",
    ]);
}

/// The main link's event for the network change (within a 30 s guard).
async fn network_change(events: &mut LinkEvents) -> phobos_stn::LinkEvent {
    tokio::time::timeout(
        Duration::from_secs(30),
        events.wait_for("default-longlink", |e| {
            e.reason == Some(LinkError::NetworkChange)
        }),
    )
    .await
    .expect("the network change reached the driver")
    .unwrap()
}

#[test]
fn lost_notifications_are_repaired_by_rereading_the_state() {
    let Some(ns) = Netns::create() else { return };
    ns.ip(&["addr", "add", "10.90.255.1/24", "dev", "v0"]);
    ns.run(async || {
        // A tiny receive buffer: a burst of 300 changes overflows it (ENOBUFS).
        let mut w = NetWatcher::bind(config().recv_buffer(1)).unwrap();
        let mut batch = String::new();
        for i in 0..300 {
            batch.push_str(&format!(
                "addr add 10.90.{}.{}/32 dev v0\n",
                i / 200,
                i % 200 + 1
            ));
        }
        batch.push_str("addr del 10.90.255.1/24 dev v0\n");
        ns.ip_batch(&batch);
        let want: Vec<IpAddr> = (0..300)
            .map(|i| ip(&format!("10.90.{}.{}", i / 200, i % 200 + 1)))
            .collect();
        let gone = ip("10.90.255.1");
        let complete = |s: &phobos_stn::netwatch::NetState| {
            let have: Vec<IpAddr> = s.addresses().map(|a| a.addr).collect();
            want.iter().all(|a| have.contains(a)) && !have.contains(&gone)
        };
        let seen = until(&mut w, |c| complete(&c.state)).await;
        // The removal is reported even if its notification was among the lost ones.
        assert!(seen.iter().any(|c| removed(c, gone)));
        assert!(complete(w.state()));
    });
}

/// Two default routes that differ only in their metric are two kernel routes; deleting one
/// leaves the other, and the network is still available.
#[test]
fn deleting_one_of_two_default_routes_differing_in_metric_leaves_the_network() {
    let Some(ns) = Netns::create() else { return };
    ns.ip(&["addr", "add", "10.70.0.1/24", "dev", "v0"]);
    let route = |op: &str, metric: &str| {
        ns.ip(&[
            "route",
            op,
            "default",
            "via",
            "10.70.0.2",
            "dev",
            "v0",
            "metric",
            metric,
        ]);
    };
    route("add", "100");
    route("add", "600");
    ns.run(async || {
        let mut w = NetWatcher::bind(config()).unwrap();
        assert!(w.state().is_available());
        route("del", "600");
        // Anything: the route deletion is either reported or not; then a marker address.
        ns.ip(&["addr", "add", "10.70.0.77/24", "dev", "v0"]);
        let seen = until(&mut w, |c| added(c, ip("10.70.0.77"))).await;
        // Before, the two routes were one entry, and deleting one removed it.
        assert!(seen.iter().all(|c| c.state.is_available()), "{seen:#?}");
        assert!(
            w.state().is_available(),
            "the kernel still has a default route, the watcher says none"
        );
    });
}

#[test]
fn a_change_read_by_a_cancelled_call_is_reported_by_the_next() {
    // Before, the events a call had gathered lived in the call: dropped inside the debounce
    // window (a timeout, a `select!`), it lost them, and the next call waited for another
    // change. (Should the notification come after the cancel on a loaded machine, the next
    // call reads it itself: the test then passes without checking the fix, never fails.)
    let Some(ns) = Netns::create() else { return };
    ns.run(async || {
        let mut w =
            NetWatcher::bind(NetWatchConfig::default().debounce(Duration::from_millis(500)))
                .unwrap();
        ns.ip(&["addr", "add", "10.73.0.1/24", "dev", "v0"]);
        let first = tokio::time::timeout(Duration::from_millis(200), w.next_change()).await;
        assert!(first.is_err(), "cancelled inside the debounce window");
        let again = until(&mut w, |c| added(c, ip("10.73.0.1"))).await;
        assert!(!again.is_empty());
    });
}

#[test]
fn a_default_route_the_kernel_drops_with_its_address_leaves_the_state() {
    // The kernel removes the routes through an address it removes without a route
    // notification. Before, the watcher kept such a default route: the network stayed
    // "available" with no default route at all.
    let Some(ns) = Netns::create() else { return };
    ns.ip(&["addr", "add", "10.71.0.1/24", "dev", "v0"]);
    ns.ip(&["route", "add", "default", "via", "10.71.0.2", "dev", "v0"]);
    ns.run(async || {
        let mut w = NetWatcher::bind(config()).unwrap();
        assert!(w.state().is_available());
        ns.ip(&["addr", "del", "10.71.0.1/24", "dev", "v0"]);
        until(&mut w, |c| removed(c, ip("10.71.0.1"))).await;
        // A marker: another address, with no default route; its notification comes after
        // the re-read the removal asked for.
        ns.ip(&["addr", "add", "10.72.0.1/24", "dev", "v0"]);
        until(&mut w, |c| added(c, ip("10.72.0.1"))).await;
        assert_eq!(w.state().default_routes().count(), 0);
        assert_eq!(w.state().net_kind(), NetKind::None);
    });
}

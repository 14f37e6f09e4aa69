//! Short-link scenarios (spec §8), driven by hand in virtual time: the test plays the
//! driver, answering `ShortConnect`, `Resolve` and `HttpExchange` itself.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use phobos_plugin_api::{AddrSource, CmdId, IpPort, LinkPurpose, ResolvedAddr, TaskId};

use super::epoch::epoch;
use super::harness::config_with;
use crate::{
    Action, ChannelSelect, ConnId, ConnectProfile, DialError, Engine, ErrorKind, Event,
    ExchangeError, HttpFailure, HttpRequest, HttpResponse, LocalError, SocketFailure, TaskEnd,
    TaskError, TaskSpec, TimeoutLevel,
};

/// The engine plus the actions and events it produced, in virtual time.
struct Drive {
    engine: Engine,
    t0: Instant,
    now: Instant,
    actions: Vec<Action>,
    events: Vec<Event>,
    /// The newest connection [`Drive::connects_keep`] returned.
    seen: ConnId,
}

/// The long link's address in these tests (the short link is what they drive).
fn long_link_addr() -> IpPort {
    IpPort::new(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), 8080)
}

impl Drive {
    fn new() -> Self {
        Self::with(|b| b)
    }

    fn with(f: impl FnOnce(crate::ConfigBuilder) -> crate::ConfigBuilder) -> Self {
        Self::of(f(config_with(&[long_link_addr()])).build().unwrap())
    }

    /// A drive of an engine made from `config`.
    fn of(config: crate::Config) -> Self {
        let t0 = epoch();
        Drive {
            engine: Engine::new(config, t0).unwrap(),
            t0,
            now: t0,
            actions: Vec::new(),
            events: Vec::new(),
            seen: ConnId(0),
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.engine.poll_action() {
            self.actions.push(a);
        }
        while let Some(e) = self.engine.poll_event() {
            self.events.push(e);
        }
    }

    fn start(&mut self, spec: TaskSpec) -> TaskId {
        let id = self.engine.start_task(self.now, spec);
        self.drain();
        id
    }

    /// Moves time to `at`, firing every deadline on the way.
    fn advance_to(&mut self, at: Instant) {
        while let Some(d) = self.engine.poll_timeout().filter(|d| *d <= at) {
            self.now = d.max(self.now);
            self.engine.handle_timeout(self.now);
            self.drain();
        }
        self.now = at.max(self.now);
    }

    fn advance(&mut self, by: Duration) {
        self.advance_to(self.now + by);
    }

    /// The `ShortConnect` actions so far, oldest first, taken out.
    fn connects(&mut self) -> Vec<(ConnId, IpPort, String)> {
        let mut out = Vec::new();
        self.actions.retain(|a| match a {
            Action::ShortConnect {
                attempt,
                addr,
                host,
                ..
            } => {
                out.push((*attempt, *addr, host.clone()));
                false
            }
            _ => true,
        });
        out
    }

    /// The connections of the `ShortConnect` actions not yet seen by this method (the
    /// actions stay, so their `proxy` flags can be read).
    fn connects_keep(&mut self) -> Vec<ConnId> {
        let out: Vec<ConnId> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::ShortConnect { attempt, .. } if *attempt > self.seen => Some(*attempt),
                _ => None,
            })
            .collect();
        if let Some(last) = out.last() {
            self.seen = *last;
        }
        out
    }

    /// The `HttpExchange` actions so far, taken out.
    fn exchanges(&mut self) -> Vec<(ConnId, HttpRequest)> {
        let mut out = Vec::new();
        self.actions.retain(|a| match a {
            Action::HttpExchange { conn, request, .. } => {
                out.push((*conn, request.clone()));
                false
            }
            _ => true,
        });
        out
    }

    fn aborted(&self, conn: ConnId) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Abort { attempt } if *attempt == conn))
    }

    fn connected(&mut self, conn: ConnId) {
        self.engine.handle_connected(self.now, conn);
        self.drain();
    }

    fn respond(&mut self, conn: ConnId, status: u16, body: &'static [u8]) {
        self.engine
            .handle_http_progress(self.now, conn, 64 + body.len());
        self.engine.handle_http_response(
            self.now,
            conn,
            HttpResponse {
                status,
                headers: vec![("content-length".into(), body.len().to_string())],
                body: Bytes::from_static(body),
                reusable: false,
            },
        );
        self.drain();
    }

    /// A `200` on a connection the driver found reusable, with the server's `Keep-Alive`
    /// header (if any).
    fn respond_reusable(&mut self, conn: ConnId, keep_alive: Option<&str>) {
        let mut headers = vec![("content-length".to_owned(), "4".to_owned())];
        if let Some(k) = keep_alive {
            headers.push(("keep-alive".to_owned(), k.to_owned()));
        }
        self.engine.handle_http_progress(self.now, conn, 80);
        self.engine.handle_http_response(
            self.now,
            conn,
            HttpResponse {
                status: 200,
                headers,
                body: Bytes::from_static(b"pong"),
                reusable: true,
            },
        );
        self.drain();
    }

    /// Runs a keep-alive task to `10.0.0.1:80` on a fresh connection up to its `200`; the
    /// connection it used.
    fn fresh_keep_alive_exchange(&mut self, keep_alive: Option<&str>) -> ConnId {
        let id = self.start(keep_alive_task());
        let (conn, _, _) = self.connects().pop().expect("a connect");
        self.connected(conn);
        assert_eq!(self.exchanges().len(), 1);
        self.respond_reusable(conn, keep_alive);
        assert!(self.end(id).is_some_and(|e| e.outcome.is_ok()));
        conn
    }

    fn end(&self, id: TaskId) -> Option<&TaskEnd> {
        self.events.iter().find_map(|e| match e {
            Event::TaskEnded(end) if end.id == id => Some(end),
            _ => None,
        })
    }

    fn retries(&self, id: TaskId) -> Vec<TaskError> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::TaskRetrying { id: i, error, .. } if *i == id => Some(error.clone()),
                _ => None,
            })
            .collect()
    }

    fn first_packet_timeout(&self) -> Duration {
        self.events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::TaskSent {
                    first_packet_timeout,
                    ..
                } => Some(*first_packet_timeout),
                _ => None,
            })
            .expect("a request was sent")
    }
}

fn addr(last: u8) -> IpPort {
    IpPort::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), 80)
}

fn short_task(hosts: &[&str]) -> TaskSpec {
    TaskSpec::new(CmdId(0), &b"hello"[..])
        .with_channel(ChannelSelect::Short)
        .with_short_link("/cgi-bin/x", hosts.iter().copied())
}

#[test]
fn a_short_task_posts_the_codec_shaped_request_and_ends_with_the_body() {
    let mut d = Drive::new();
    let id = d.start(short_task(&["10.0.0.1:80"]).with_header("X-Trace", "7"));
    let connects = d.connects();
    assert_eq!(connects.len(), 1);
    let (conn, a, host) = connects[0].clone();
    assert_eq!((a, host.as_str()), (addr(1), "10.0.0.1:80"));
    d.now += Duration::from_millis(30);
    d.connected(conn);
    let (xconn, req) = d.exchanges().pop().expect("exchange asked for");
    assert_eq!(xconn, conn);
    assert_eq!(req.path, "/cgi-bin/x");
    assert_eq!(&req.body[..], b"hello");
    let names: Vec<&str> = req.headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "Accept",
            "Cache-Control",
            "Connection",
            "Content-Length",
            "Content-Type",
            "Host",
            "User-Agent",
            "X-Trace"
        ]
    );
    assert_eq!(req.header("host"), Some("10.0.0.1:80"));
    assert_eq!(req.header("content-length"), Some("5"));
    d.now += Duration::from_millis(40);
    d.respond(conn, 200, b"pong");
    let end = d.end(id).expect("ended");
    assert_eq!(&end.outcome.as_ref().unwrap().body[..], b"pong");
    let p = &end.profile;
    assert_eq!(p.attempts, 1);
    assert_eq!(p.addr, Some(addr(1)));
    assert_eq!(p.link.as_ref().map(|l| l.as_str()), Some(crate::SHORT_LINK));
    assert_eq!(p.connect_end, Some(d.t0 + Duration::from_millis(30)));
    assert_eq!(p.first_byte, Some(d.t0 + Duration::from_millis(70)));
    assert_eq!(d.engine.task_count(), 0);
    assert_eq!(d.engine.poll_timeout(), d.engine.next_timer().map(|t| t.0));
}

#[test]
fn a_stalled_server_hits_the_first_packet_timeout_and_the_retry_uses_the_next_address() {
    let mut d = Drive::new();
    let id = d.start(short_task(&["10.0.0.1:80", "10.0.0.2:80"]));
    let (conn, a, _) = d.connects()[0].clone();
    assert_eq!(a, addr(1));
    d.connected(conn);
    assert_eq!(d.exchanges().len(), 1);
    let sent = d.now;
    let fp = d.first_packet_timeout();
    assert_eq!(fp, Duration::from_millis(12_000), "Wi-Fi base, 5-byte body");
    d.advance_to(sent + fp - Duration::from_millis(1));
    assert!(d.retries(id).is_empty());
    d.advance_to(sent + fp);
    assert!(d.aborted(conn), "the stalled exchange is dropped");
    assert_eq!(
        d.retries(id),
        vec![TaskError::Timeout(TimeoutLevel::FirstPacket)]
    );
    assert!(d.events.iter().any(|e| matches!(
        e,
        Event::AddrOutcome { addr: a, success: false, .. } if *a == addr(1)
    )));
    // After the 1 s retry pause the next attempt starts with the other address.
    d.advance(Duration::from_millis(999));
    assert!(d.connects().is_empty());
    d.advance(Duration::from_millis(1));
    let next = d.connects();
    assert_eq!(next[0].1, addr(2), "switches to the next IP");
    d.connected(next[0].0);
    d.respond(next[0].0, 200, b"ok");
    let end = d.end(id).unwrap();
    assert!(end.outcome.is_ok());
    assert_eq!(end.profile.attempts, 2);
    assert_eq!(end.profile.addr, Some(addr(2)));
}

/// §6.2: a long-polling task's response must begin within its long-polling time, the
/// short link's check in place of the first-packet one, reported as Mars's −503 (type
/// `kEctHttp`, as every attempt timeout of the short link); an ordinary task's first-packet
/// timeout there is −500 of the same type.
#[test]
fn a_silent_long_poll_ends_with_the_long_polling_timeout_as_mars_reports_it() {
    let mut d = Drive::new();
    let poll = short_task(&["10.0.0.1:80"])
        .with_long_polling(Duration::from_secs(30))
        .with_retry_count(0);
    let id = d.start(poll);
    let (conn, ..) = d.connects()[0].clone();
    d.connected(conn);
    let sent = d.now;
    assert_eq!(d.first_packet_timeout(), Duration::from_secs(30));
    d.advance_to(sent + Duration::from_secs(30));
    let end = d.end(id).expect("ended");
    let error = end.outcome.as_ref().unwrap_err();
    assert_eq!(error, &TaskError::Timeout(TimeoutLevel::LongPolling));
    assert_eq!(error.to_string(), "long-polling timeout");
    let link = end.profile.link.as_ref().unwrap().as_str();
    assert_eq!(error.mars_code_on(link), (5, -503));

    let id = d.start(short_task(&["10.0.0.1:80"]).with_retry_count(0));
    let (conn, ..) = d.connects()[0].clone();
    d.connected(conn);
    d.advance(d.first_packet_timeout());
    let end = d.end(id).expect("ended");
    let error = end.outcome.as_ref().unwrap_err();
    assert_eq!(error, &TaskError::Timeout(TimeoutLevel::FirstPacket));
    let link = end.profile.link.as_ref().unwrap().as_str();
    assert_eq!(error.mars_code_on(link), (5, -500));
}

#[test]
fn bytes_that_stop_arriving_hit_the_packet_to_packet_timeout() {
    let mut d = Drive::new();
    let id = d.start(short_task(&["10.0.0.1:80"]).with_retry_count(0));
    let (conn, ..) = d.connects()[0].clone();
    d.connected(conn);
    d.advance(Duration::from_millis(500));
    d.engine.handle_http_progress(d.now, conn, 100);
    d.drain();
    let last = d.now;
    d.advance_to(last + Duration::from_millis(7_999));
    assert!(d.end(id).is_none());
    d.advance_to(last + Duration::from_millis(8_000));
    let end = d.end(id).expect("ended");
    assert_eq!(
        end.outcome,
        Err(TaskError::Timeout(TimeoutLevel::PacketToPacket))
    );
    assert_eq!(end.profile.received_bytes, 100);
    assert!(d.aborted(conn));
}

#[test]
fn a_5xx_status_is_retried_then_ends_as_an_http_error() {
    let mut d = Drive::new();
    let id = d.start(short_task(&["10.0.0.1:80"]));
    for round in 0..2 {
        if round == 1 {
            d.advance(Duration::from_secs(1));
        }
        let (conn, ..) = d.connects()[0].clone();
        d.connected(conn);
        d.respond(conn, 503, b"busy");
    }
    let end = d.end(id).expect("ended after its one retry");
    let err = end.outcome.clone().unwrap_err();
    assert_eq!(err, TaskError::Http(HttpFailure::Status(503)));
    assert_eq!(err.kind(), ErrorKind::Http);
    assert_eq!(err.mars_code(), (5, 503));
    assert_eq!(d.retries(id), vec![err]);
}

#[test]
fn exchanges_broken_by_damaged_bytes_are_repeated_at_once_a_few_times_for_free() {
    let damaged = || ExchangeError::Closed(crate::CloseCause::Damaged);
    let mut d = Drive::new();
    // No retry of its own: only the free repeats can save it.
    let id = d.start(short_task(&["10.0.0.1:80"]).with_retry_count(0));
    for _ in 0..3 {
        let (conn, ..) = d.connects()[0].clone();
        d.connected(conn);
        d.engine.handle_http_failed(d.now, conn, damaged());
        d.drain();
        assert!(d.end(id).is_none());
        // At once: no retry pause.
        d.advance(Duration::ZERO);
    }
    let (conn, ..) = d.connects()[0].clone();
    d.connected(conn);
    d.engine.handle_http_failed(d.now, conn, damaged());
    d.drain();
    let end = d
        .end(id)
        .expect("the fourth damaged attempt spends the (absent) retry");
    let err = end.outcome.clone().unwrap_err();
    assert_eq!(err, TaskError::Socket(SocketFailure::Damaged));
    assert_eq!(err.mars_code(), (6, -10504));
    assert_eq!(end.profile.attempts, 4);

    // Mars-classic spends the task's retries on them like on any socket error.
    let mut d = Drive::with(|b| b.connect_profile(crate::ConnectProfile::MarsClassic));
    let id = d.start(short_task(&["10.0.0.1:80"]).with_retry_count(0));
    let (conn, ..) = d.connects()[0].clone();
    d.connected(conn);
    d.engine.handle_http_failed(d.now, conn, damaged());
    d.drain();
    assert!(d.end(id).is_some());
}

#[test]
fn broken_responses_end_with_their_typed_errors() {
    let cases = [
        (
            ExchangeError::Http(HttpFailure::BadStatusLine),
            TaskError::Http(HttpFailure::BadStatusLine),
            (5, -10195),
        ),
        (
            ExchangeError::Http(HttpFailure::BodyTooLarge { limit: 10 }),
            TaskError::Http(HttpFailure::BodyTooLarge { limit: 10 }),
            (5, -10194),
        ),
        (
            ExchangeError::Closed(crate::CloseCause::RemoteClosed),
            TaskError::Socket(SocketFailure::RemoteClosed),
            (4, -10090),
        ),
    ];
    for (reported, want, mars) in cases {
        let mut d = Drive::new();
        let id = d.start(short_task(&["10.0.0.1:80"]).with_retry_count(0));
        let (conn, ..) = d.connects()[0].clone();
        d.connected(conn);
        d.engine.handle_http_failed(d.now, conn, reported);
        d.drain();
        let end = d.end(id).expect("ended");
        assert_eq!(end.outcome, Err(want.clone()));
        assert_eq!(want.mars_code(), mars);
    }
    // A request the driver cannot write is not retried.
    let mut d = Drive::new();
    let id = d.start(short_task(&["10.0.0.1:80"]));
    let (conn, ..) = d.connects()[0].clone();
    d.connected(conn);
    d.engine
        .handle_http_failed(d.now, conn, ExchangeError::Request);
    d.drain();
    assert_eq!(
        d.end(id).unwrap().outcome.clone().unwrap_err().kind(),
        ErrorKind::Codec
    );
}

#[test]
fn a_refused_address_falls_through_the_race_within_one_attempt() {
    let mut d = Drive::new();
    let id = d.start(short_task(&["10.0.0.1:80", "10.0.0.2:80"]));
    let first = d.connects()[0].clone();
    d.engine
        .handle_connect_failed(d.now, first.0, DialError::Refused);
    d.drain();
    let second = d.connects();
    assert_eq!(
        second[0].1,
        addr(2),
        "nothing in flight: the next address starts at once"
    );
    d.connected(second[0].0);
    d.respond(second[0].0, 200, b"ok");
    let end = d.end(id).unwrap();
    assert!(end.outcome.is_ok());
    assert_eq!(end.profile.attempts, 1);
}

#[test]
fn every_address_refused_ends_with_a_dial_error_after_the_retries() {
    let mut d = Drive::new();
    let id = d.start(short_task(&["10.0.0.1:80"]).with_retry_count(1));
    for round in 0..2 {
        if round == 1 {
            d.advance(Duration::from_secs(1));
        }
        let (conn, ..) = d.connects()[0].clone();
        d.engine
            .handle_connect_failed(d.now, conn, DialError::Refused);
        d.drain();
    }
    let end = d.end(id).unwrap();
    assert_eq!(end.outcome.clone().unwrap_err().kind(), ErrorKind::Dial);
    assert_eq!(end.profile.attempts, 2);
}

#[test]
fn a_silent_address_times_out_at_the_connect_timeout() {
    let mut d = Drive::new();
    let id = d.start(short_task(&["10.0.0.1:80"]).with_retry_count(0));
    let (conn, ..) = d.connects()[0].clone();
    d.advance(Duration::from_millis(9_999));
    assert!(d.end(id).is_none());
    d.advance(Duration::from_millis(1));
    assert!(d.aborted(conn));
    assert_eq!(
        d.end(id).unwrap().outcome,
        Err(TaskError::Timeout(TimeoutLevel::Connect))
    );
}

#[test]
fn the_total_timeout_ends_a_running_exchange() {
    let mut d = Drive::new();
    let id = d.start(
        short_task(&["10.0.0.1:80"])
            .with_total_timeout(Duration::from_secs(5))
            .with_server_cost(Duration::from_secs(30)),
    );
    let (conn, ..) = d.connects()[0].clone();
    d.connected(conn);
    d.advance(Duration::from_secs(5));
    assert_eq!(
        d.end(id).unwrap().outcome,
        Err(TaskError::Timeout(TimeoutLevel::Total))
    );
    assert!(d.aborted(conn));
    // A late answer for the aborted exchange is ignored.
    d.respond(conn, 200, b"late");
    assert_eq!(
        d.events
            .iter()
            .filter(|e| matches!(e, Event::TaskEnded(_)))
            .count(),
        1
    );
}

/// Runs `d` in 10 ms steps until task `id` ends (a silent server: no attempt connects):
/// each connect attempt's address and how long it ran before it was aborted.
fn connect_lifetimes(d: &mut Drive, id: TaskId) -> Vec<(IpPort, Duration)> {
    // (connection, address, start, lifetime once aborted)
    let mut seen: Vec<(ConnId, IpPort, Instant, Option<Duration>)> = Vec::new();
    while d.end(id).is_none() {
        for (conn, addr, _) in d.connects() {
            seen.push((conn, addr, d.now, None));
        }
        d.advance(Duration::from_millis(10));
        assert!(
            d.now - d.t0 < Duration::from_secs(120),
            "the task never ended"
        );
        for (conn, _, start, lifetime) in &mut seen {
            if lifetime.is_none() && d.aborted(*conn) {
                *lifetime = Some(d.now - *start);
            }
        }
    }
    seen.into_iter()
        .map(|(_, addr, _, lifetime)| (addr, lifetime.expect("every attempt aborted")))
        .collect()
}

/// An address's first attempt runs its whole `timeout`; a hedge of it (the Phobos
/// profile's repeat of an attempt still pending) ends with it, so sooner.
fn check_lifetimes(
    lifetimes: &[(IpPort, Duration)],
    timeout: impl Fn(&IpPort) -> Duration,
    profile: ConnectProfile,
) {
    for (k, (a, lifetime)) in lifetimes.iter().enumerate() {
        let first = lifetimes.iter().position(|(b, _)| b == a) == Some(k);
        let ok = if first {
            *lifetime == timeout(a)
        } else {
            *lifetime < timeout(a)
        };
        assert!(ok, "{profile:?}: {lifetimes:?}");
    }
}

/// §8.4: per-family connect timeouts take the place of the one connect timeout when the
/// attempt's list holds an IPv6 address, on both connect profiles; a list of IPv4
/// addresses keeps the one timeout.
#[test]
fn per_family_connect_timeouts_apply_to_lists_with_ipv6() {
    for profile in [ConnectProfile::Phobos, ConnectProfile::MarsClassic] {
        let family = |b: crate::ConfigBuilder| {
            b.connect_profile(profile)
                .short_link(crate::ShortLinkConfig {
                    family_connect_timeouts: Some((Duration::from_secs(4), Duration::from_secs(2))),
                    ..crate::ShortLinkConfig::default()
                })
        };
        let mut d = Drive::with(family);
        let id = d.start(short_task(&["[fd00::1]:80", "10.0.0.1:80"]).with_retry_count(0));
        let lifetimes = connect_lifetimes(&mut d, id);
        assert!(
            lifetimes.iter().any(|(a, _)| a.ip.is_ipv6()),
            "{lifetimes:?}"
        );
        assert!(
            lifetimes.iter().any(|(a, _)| *a == addr(1)),
            "{lifetimes:?}"
        );
        let per_family = |a: &IpPort| Duration::from_secs(if a.ip.is_ipv6() { 2 } else { 4 });
        check_lifetimes(&lifetimes, per_family, profile);
        let end = d.end(id).unwrap();
        assert_eq!(end.outcome, Err(TaskError::Timeout(TimeoutLevel::Connect)));

        // IPv4 alone: the one connect timeout (10 s).
        let mut d = Drive::with(family);
        let id = d.start(short_task(&["10.0.0.1:80"]).with_retry_count(0));
        let lifetimes = connect_lifetimes(&mut d, id);
        check_lifetimes(&lifetimes, |_| Duration::from_secs(10), profile);
    }
}

#[test]
fn names_are_resolved_through_the_chain_for_the_short_link() {
    let mut d = Drive::new();
    let id = d.start(short_task(&["s.example:8081"]));
    let resolve = d
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Resolve {
                link,
                host,
                source,
                purpose,
            } => Some((link.clone(), host.clone(), *source, *purpose)),
            _ => None,
        })
        .expect("resolution asked for");
    assert_eq!(resolve.0.as_str(), format!("short#{}", id.0));
    assert_eq!(resolve.1, "s.example");
    assert_eq!(resolve.3, LinkPurpose::ShortLink);
    let found = vec![ResolvedAddr {
        ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)),
        port: None,
        source: AddrSource::SystemDns,
    }];
    d.engine
        .handle_resolved(d.now, &resolve.0, &resolve.1, resolve.2, Ok(found));
    d.drain();
    let (conn, a, host) = d.connects()[0].clone();
    assert_eq!(a, IpPort::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)), 8081));
    assert_eq!(host, "s.example:8081");
    d.connected(conn);
    let (_, req) = d.exchanges().pop().unwrap();
    assert_eq!(req.header("Host"), Some("s.example:8081"));
}

#[test]
fn an_empty_resolution_ends_with_no_address() {
    let mut d = Drive::new();
    let id = d.start(short_task(&["s.example"]).with_retry_count(0));
    let (link, host, source) = d
        .actions
        .iter()
        .find_map(|a| match a {
            Action::Resolve {
                link, host, source, ..
            } => Some((link.clone(), host.clone(), *source)),
            _ => None,
        })
        .unwrap();
    d.engine
        .handle_resolved(d.now, &link, &host, source, Ok(Vec::new()));
    d.drain();
    assert_eq!(
        d.end(id).unwrap().outcome,
        Err(TaskError::Dial(crate::DialFailure::NoAddress))
    );
}

#[test]
fn cancel_and_reset_end_short_tasks_once_and_abort_their_connections() {
    let mut d = Drive::new();
    let a = d.start(short_task(&["10.0.0.1:80"]));
    let b = d.start(short_task(&["10.0.0.2:80"]));
    let conns = d.connects();
    d.connected(conns[0].0);
    assert!(d.engine.cancel_task(d.now, a));
    d.drain();
    assert_eq!(d.end(a).unwrap().outcome, Err(TaskError::Canceled));
    assert!(d.aborted(conns[0].0));
    d.engine.reset(d.now);
    d.drain();
    assert_eq!(
        d.end(b).unwrap().outcome,
        Err(TaskError::Local(LocalError::Reset))
    );
    assert!(d.aborted(conns[1].0));
    assert_eq!(d.engine.task_count(), 0);
    assert_eq!(d.engine.poll_timeout(), d.engine.next_timer().map(|t| t.0));
}

#[test]
fn either_goes_short_while_the_long_link_is_down() {
    let mut d = Drive::new();
    let id = d.start(
        TaskSpec::new(CmdId(9), &b"x"[..])
            .with_channel(ChannelSelect::Either)
            .with_short_link("/cgi-bin/y", ["10.0.0.3:80"]),
    );
    assert_eq!(
        d.connects()[0].1,
        IpPort::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3)), 80)
    );
    assert!(d.engine.has_task(id));
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::Connect { .. })),
        "the long link is not asked for"
    );
}

#[test]
fn a_network_change_interrupts_the_exchange_and_retries() {
    let mut d = Drive::new();
    let id = d.start(short_task(&["10.0.0.1:80"]));
    let (conn, ..) = d.connects()[0].clone();
    d.connected(conn);
    d.engine
        .set_network(d.now, phobos_plugin_api::NetKind::Mobile, "cell");
    d.drain();
    assert!(d.aborted(conn));
    assert_eq!(
        d.retries(id),
        vec![TaskError::Local(LocalError::Interrupted)]
    );
    d.advance(Duration::from_secs(1));
    assert_eq!(d.connects().len(), 1, "retried after the pause");
}

/// An auth check that passes once `authed` is set.
#[derive(Debug, Default)]
struct Gate {
    authed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl phobos_plugin_api::AuthCheck for Gate {
    fn name(&self) -> &str {
        "gate"
    }

    fn is_authed(&self, _host: &str) -> bool {
        self.authed.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn ensure_authed(&self, _host: &str) -> Result<(), phobos_plugin_api::AuthError> {
        Ok(())
    }
}

#[test]
fn a_task_needing_auth_waits_for_the_login_of_its_first_host() {
    let gate = std::sync::Arc::new(Gate::default());
    let mut d = Drive::with(|b| b.auth(gate.clone()));
    let id = d.start(short_task(&["10.0.0.1:80"]).needs_auth());
    assert!(d.connects().is_empty(), "nothing connects before auth");
    assert!(d
        .actions
        .iter()
        .any(|a| matches!(a, Action::EnsureAuth { host } if host == "10.0.0.1:80")));
    d.engine.handle_auth(d.now, "10.0.0.1:80", Ok(()));
    d.drain();
    let (conn, ..) = d.connects()[0].clone();
    d.connected(conn);
    d.respond(conn, 200, b"authed");
    assert!(d.end(id).unwrap().outcome.is_ok());
}

#[test]
fn a_rejected_login_ends_the_waiting_task() {
    let gate = std::sync::Arc::new(Gate::default());
    let mut d = Drive::with(|b| b.auth(gate.clone()));
    let id = d.start(short_task(&["10.0.0.1:80"]).needs_auth());
    d.engine.handle_auth(
        d.now,
        "10.0.0.1:80",
        Err(phobos_plugin_api::AuthError::Rejected(
            "bad password".into(),
        )),
    );
    d.drain();
    assert_eq!(
        d.end(id).unwrap().outcome.clone().unwrap_err().kind(),
        ErrorKind::Auth
    );
    assert!(d.connects().is_empty());
}

/// A drive whose short link goes through the app's proxy.
fn proxied() -> Drive {
    let proxied = crate::ShortLinkConfig {
        proxy: true,
        ..crate::ShortLinkConfig::default()
    };
    Drive::with(|b| b.short_link(proxied))
}

/// The `proxy` flags of the connects asked for since the last call, taken out of the
/// actions.
fn proxy_flags(d: &mut Drive) -> Vec<bool> {
    let mut out = Vec::new();
    d.actions.retain(|a| match a {
        Action::ShortConnect { proxy, .. } => {
            out.push(*proxy);
            false
        }
        _ => true,
    });
    out
}

#[test]
fn with_a_proxy_the_last_retry_flips_the_last_choice_that_worked() {
    let mut d = proxied();
    // Nothing has worked yet: attempts go through the proxy, the last retry goes direct.
    let id = d.start(short_task(&["10.0.0.1:80"]).with_retry_count(2));
    for round in 0..3 {
        if round > 0 {
            d.advance(Duration::from_secs(1));
        }
        let conns = d.connects_keep();
        d.engine
            .handle_connect_failed(d.now, conns[0], DialError::Unreachable);
        d.drain();
    }
    assert_eq!(proxy_flags(&mut d), vec![true, true, false]);
    assert!(d.end(id).is_some());
    // A direct success makes the next task's last retry try the proxy.
    let ok = d.start(short_task(&["10.0.0.1:80"]).with_retry_count(1));
    let first = d.connects_keep()[0];
    d.engine
        .handle_connect_failed(d.now, first, DialError::Unreachable);
    d.drain();
    d.advance(Duration::from_secs(1));
    let second = d.connects_keep()[0];
    d.connected(second);
    d.respond(second, 200, b"direct");
    assert!(d.end(ok).unwrap().outcome.is_ok());
    assert_eq!(proxy_flags(&mut d), vec![true, false]);
    let next = d.start(short_task(&["10.0.0.1:80"]).with_retry_count(1));
    let c = d.connects_keep()[0];
    d.engine
        .handle_connect_failed(d.now, c, DialError::Unreachable);
    d.drain();
    d.advance(Duration::from_secs(1));
    assert_eq!(proxy_flags(&mut d), vec![true, true]);
    assert!(d.engine.has_task(next));
}

/// §8.6 flips the proxy choice on the last retry of a task that has retries
/// (`remain == 0 && retry_count > 0`). A zombie's restart has none (its retry count is 0),
/// so it goes through the proxy as its task's first attempt did. (It went direct: the flip
/// looked at the attempts made, not at the retries the task has.)
#[test]
fn a_zombie_restart_keeps_the_proxy() {
    let mut d = proxied();
    let id = d.start(
        short_task(&["10.0.0.1:80"])
            .with_retry_count(0)
            .with_total_timeout(Duration::from_secs(120)),
    );
    let conn = d.connects_keep()[0];
    d.engine
        .handle_connect_failed(d.now, conn, DialError::Refused);
    d.drain();
    assert!(d.end(id).is_none(), "kept as a zombie");
    assert_eq!(proxy_flags(&mut d), vec![true]);
    d.advance(Duration::from_secs(61));
    let restarted = proxy_flags(&mut d);
    assert!(!restarted.is_empty(), "restarted");
    assert!(restarted.iter().all(|&p| p), "{restarted:?}");
}

/// An attempt through the app's proxy says nothing of the server address's own path: a
/// proxy that refuses every connect records nothing against the address, and the direct
/// last retry (§8.6) is recorded as the address's. (The proxy's refusals were taken for the
/// address's, and could get it banned for that direct try.)
#[test]
fn attempts_through_the_proxy_are_not_recorded_against_the_address() {
    let mut d = proxied();
    let outcomes = |d: &Drive| {
        d.events
            .iter()
            .filter(|e| matches!(e, Event::AddrOutcome { .. }))
            .count()
    };
    let id = d.start(short_task(&["10.0.0.1:80"]).with_retry_count(2));
    for round in 0..3 {
        if round > 0 {
            d.advance(Duration::from_secs(1));
        }
        let conn = d.connects_keep()[0];
        d.engine
            .handle_connect_failed(d.now, conn, DialError::Refused);
        d.drain();
        // Two attempts through the proxy, then the direct last retry.
        assert_eq!(outcomes(&d), usize::from(round == 2), "round {round}");
    }
    assert_eq!(proxy_flags(&mut d), vec![true, true, false]);
    assert!(d.end(id).is_some());
}

fn keep_alive_task() -> TaskSpec {
    short_task(&["10.0.0.1:80"]).with_header("Connection", "Keep-Alive")
}

#[test]
fn a_keep_alive_connection_is_reused_by_the_next_task_to_the_same_host() {
    let mut d = Drive::new();
    let conn = d.fresh_keep_alive_exchange(Some("timeout=30, max=100"));
    assert!(!d.aborted(conn), "kept, not closed");
    assert_eq!(d.engine.short_link_idle(), 1);

    d.now += Duration::from_secs(29);
    let id = d.start(keep_alive_task());
    assert!(
        d.connects().is_empty(),
        "no connect: the idle connection is used"
    );
    let (xconn, req) = d
        .exchanges()
        .pop()
        .expect("exchange on the idle connection");
    assert_eq!(xconn, conn);
    assert_eq!(req.header("connection"), Some("Keep-Alive"));
    assert_eq!(d.engine.short_link_idle(), 0);
    d.respond_reusable(conn, Some("timeout=30"));
    assert!(d.end(id).is_some_and(|e| e.outcome.is_ok()));
    assert_eq!(d.engine.short_link_idle(), 1, "back in the pool");
}

#[test]
fn an_idle_connection_expires_after_the_servers_keep_alive_timeout() {
    let mut d = Drive::new();
    let conn = d.fresh_keep_alive_exchange(Some("timeout=7"));
    d.advance(Duration::from_millis(6_999));
    assert!(!d.aborted(conn));
    d.advance(Duration::from_millis(1));
    assert!(d.aborted(conn), "closed at the server's timeout");
    assert_eq!(d.engine.short_link_idle(), 0);
    d.start(keep_alive_task());
    assert_eq!(d.connects().len(), 1, "a fresh connect after expiry");
}

#[test]
fn out_of_range_keep_alive_timeouts_fall_back_to_five_seconds() {
    for header in [
        None,
        Some("timeout=0"),
        Some("timeout=60"),
        Some("max=3"),
        Some("timeout=x"),
    ] {
        let mut d = Drive::new();
        let conn = d.fresh_keep_alive_exchange(header);
        d.advance(Duration::from_millis(4_999));
        assert!(!d.aborted(conn), "{header:?}");
        d.advance(Duration::from_millis(1));
        assert!(d.aborted(conn), "{header:?}");
    }
}

#[test]
fn connections_are_not_kept_without_keep_alive_a_200_or_a_reusable_connection() {
    // The codec's default request says `Connection: close`.
    let mut d = Drive::new();
    d.start(short_task(&["10.0.0.1:80"]));
    let (conn, _, _) = d.connects().pop().unwrap();
    d.connected(conn);
    d.exchanges();
    d.respond_reusable(conn, Some("timeout=30"));
    assert!(d.aborted(conn));
    assert_eq!(d.engine.short_link_idle(), 0);

    // Keep-Alive asked, but the server's connection is not reusable (it said close).
    let mut d = Drive::new();
    d.start(keep_alive_task());
    let (conn, _, _) = d.connects().pop().unwrap();
    d.connected(conn);
    d.exchanges();
    d.respond(conn, 200, b"pong");
    assert!(d.aborted(conn));

    // Keep-Alive asked, reusable, but not a 200.
    let mut d = Drive::new();
    d.start(keep_alive_task().with_retry_count(0));
    let (conn, _, _) = d.connects().pop().unwrap();
    d.connected(conn);
    d.exchanges();
    d.engine.handle_http_response(
        d.now,
        conn,
        HttpResponse {
            status: 404,
            headers: Vec::new(),
            body: Bytes::new(),
            reusable: true,
        },
    );
    d.drain();
    assert!(d.aborted(conn));
    assert_eq!(d.engine.short_link_idle(), 0);
}

#[test]
fn a_failed_reuse_bans_the_pool_for_five_minutes() {
    let mut d = Drive::new();
    let conn = d.fresh_keep_alive_exchange(Some("timeout=30"));
    let id = d.start(keep_alive_task());
    let (xconn, _) = d.exchanges().pop().expect("reused");
    assert_eq!(xconn, conn);
    d.engine.handle_http_failed(
        d.now,
        conn,
        ExchangeError::Closed(crate::CloseCause::RemoteClosed),
    );
    d.drain();
    assert_eq!(d.retries(id).len(), 1);
    // The retry (after the 1 s pause) connects afresh and its reusable 200 is not kept.
    d.advance(Duration::from_secs(1));
    let (fresh, _, _) = d.connects().pop().expect("fresh connect");
    assert_ne!(fresh, conn);
    d.connected(fresh);
    d.exchanges();
    d.respond_reusable(fresh, Some("timeout=30"));
    assert!(d.end(id).is_some_and(|e| e.outcome.is_ok()));
    assert!(d.aborted(fresh), "banned: not kept");
    assert_eq!(d.engine.short_link_idle(), 0);

    // After 5 min, reuse is back.
    d.advance(Duration::from_secs(300));
    let again = d.fresh_keep_alive_exchange(Some("timeout=30"));
    assert!(!d.aborted(again));
    assert_eq!(d.engine.short_link_idle(), 1);
}

#[test]
fn a_reused_connection_that_stalls_bans_the_pool_too() {
    let mut d = Drive::new();
    let conn = d.fresh_keep_alive_exchange(Some("timeout=59"));
    let id = d.start(keep_alive_task());
    assert_eq!(d.exchanges().pop().map(|x| x.0), Some(conn));
    let fp = d.first_packet_timeout();
    d.advance(fp);
    assert!(d.aborted(conn));
    assert_eq!(
        d.retries(id),
        vec![TaskError::Timeout(TimeoutLevel::FirstPacket)]
    );
    d.advance(Duration::from_secs(1));
    let (fresh, _, _) = d.connects().pop().expect("fresh connect");
    d.connected(fresh);
    d.exchanges();
    d.respond_reusable(fresh, None);
    assert!(d.aborted(fresh), "banned: not kept");
}

/// Task `id`, whose attempt on a reused connection never left, starts over at once on a
/// fresh connection (no retry spent, not ended), which answers it: the stale try was no
/// attempt. Returns the fresh connection.
fn started_over_on_a_fresh_connection(d: &mut Drive, id: TaskId) -> ConnId {
    assert!(d.end(id).is_none(), "{:?}", d.end(id));
    assert!(d.retries(id).is_empty(), "not a failed attempt");
    let (fresh, to, _) = d.connects().pop().expect("a fresh connect, at once");
    assert_eq!(to, addr(1));
    d.connected(fresh);
    assert_eq!(d.exchanges().pop().map(|x| x.0), Some(fresh));
    d.respond_reusable(fresh, Some("timeout=30"));
    let end = d.end(id).expect("ended");
    assert!(end.outcome.is_ok());
    assert_eq!(end.profile.attempts, 1, "the stale try was no attempt");
    fresh
}

#[test]
fn a_reused_connection_found_closed_before_the_request_went_out_is_replaced_at_once() {
    let mut d = Drive::new();
    let idle = d.fresh_keep_alive_exchange(Some("timeout=30"));
    let id = d.start(keep_alive_task().with_retry_count(0));
    assert_eq!(d.exchanges().pop().map(|x| x.0), Some(idle), "reused");
    let sent_before = d.engine.stats().requests_sent;
    d.engine.handle_http_failed(
        d.now,
        idle,
        ExchangeError::NotSent(crate::CloseCause::RemoteClosed),
    );
    d.drain();
    let fresh = started_over_on_a_fresh_connection(&mut d, id);
    assert_eq!(
        d.engine.stats().requests_sent,
        sent_before,
        "the request that never left is not counted as sent"
    );
    assert!(!d.aborted(fresh), "kept: reuse is not banned");
    assert_eq!(d.engine.short_link_idle(), 1);
    // One `TaskSent` per hand-over (the `Event::TaskSent` docs): the stale one and the
    // fresh one.
    let sent = d
        .events
        .iter()
        .filter(|e| matches!(e, Event::TaskSent { id: sent, .. } if *sent == id))
        .count();
    assert_eq!(sent, 2);
    // Nor is the address blamed: the next task reuses the new connection.
    d.start(keep_alive_task());
    assert_eq!(d.exchanges().pop().map(|x| x.0), Some(fresh));
}

/// The driver reports a close for a connection it still holds idle (the server's idle
/// timeout) after the engine chose to reuse it, in the same batch of inputs, before the
/// exchange was carried out: no byte of the request left, so the attempt starts over at
/// once, as for a stale connection found at the write. (It was taken for a sent request
/// that failed: a retry spent, the address blamed, the pool banned; a task without retries
/// ended with `Socket(RemoteClosed)`.)
#[test]
fn an_idle_close_reported_after_its_reuse_was_chosen_is_no_failed_attempt() {
    let mut d = Drive::new();
    let idle = d.fresh_keep_alive_exchange(Some("timeout=30"));
    let id = d.start(keep_alive_task().with_retry_count(0));
    assert_eq!(d.exchanges().pop().map(|x| x.0), Some(idle), "reused");
    d.engine
        .handle_closed(d.now, idle, crate::CloseCause::RemoteClosed);
    d.drain();
    let fresh = started_over_on_a_fresh_connection(&mut d, id);
    assert!(!d.aborted(fresh), "kept: reuse is not banned");
}

#[test]
fn stale_idle_connections_are_tried_one_by_one_then_a_fresh_one_is_opened() {
    let mut d = Drive::new();
    // Two tasks at once: two connections to the same address, both kept.
    let ids = [d.start(keep_alive_task()), d.start(keep_alive_task())];
    let conns: Vec<ConnId> = d.connects().into_iter().map(|c| c.0).collect();
    assert_eq!(conns.len(), 2);
    for &c in &conns {
        d.connected(c);
    }
    d.exchanges();
    for &c in &conns {
        d.respond_reusable(c, Some("timeout=30"));
    }
    assert!(ids.iter().all(|id| d.end(*id).is_some()));
    assert_eq!(d.engine.short_link_idle(), 2);

    // Both were closed by the server meanwhile.
    let id = d.start(keep_alive_task().with_retry_count(0));
    let mut tried = Vec::new();
    while let Some((conn, _)) = d.exchanges().pop() {
        assert!(conns.contains(&conn), "an idle one");
        tried.push(conn);
        d.engine.handle_http_failed(
            d.now,
            conn,
            ExchangeError::NotSent(crate::CloseCause::Io(104)),
        );
        d.drain();
    }
    tried.sort();
    assert_eq!(tried, conns, "each tried once");
    assert_eq!(d.engine.short_link_idle(), 0);
    let (fresh, _, _) = d.connects().pop().expect("then a fresh connect");
    d.connected(fresh);
    d.exchanges();
    d.respond(fresh, 200, b"ok");
    assert!(d.end(id).is_some_and(|e| e.outcome.is_ok()));
}

#[test]
fn a_fresh_connection_that_ends_before_the_request_went_out_is_a_failed_attempt() {
    let mut d = Drive::new();
    let id = d.start(keep_alive_task());
    let (conn, _, _) = d.connects().pop().unwrap();
    d.connected(conn);
    d.exchanges();
    d.engine.handle_http_failed(
        d.now,
        conn,
        ExchangeError::NotSent(crate::CloseCause::RemoteClosed),
    );
    d.drain();
    // A server that closes new connections is at fault: the usual retry after the pause.
    assert_eq!(
        d.retries(id),
        vec![TaskError::Socket(SocketFailure::RemoteClosed)]
    );
    assert!(d.connects().is_empty(), "not at once");
    d.advance(Duration::from_secs(1));
    assert_eq!(d.connects().len(), 1);
}

#[test]
fn an_idle_connection_the_server_closed_is_forgotten() {
    let mut d = Drive::new();
    let conn = d.fresh_keep_alive_exchange(Some("timeout=30"));
    d.engine
        .handle_closed(d.now, conn, crate::CloseCause::RemoteClosed);
    d.drain();
    assert_eq!(d.engine.short_link_idle(), 0);
    let id = d.start(keep_alive_task());
    let (fresh, _, _) = d
        .connects()
        .pop()
        .expect("a fresh connect, not the closed one");
    assert_ne!(fresh, conn);
    assert!(d.retries(id).is_empty());
}

#[test]
fn idle_connections_are_keyed_by_address_and_host() {
    let mut d = Drive::new();
    let conn = d.fresh_keep_alive_exchange(Some("timeout=30"));
    // Another address: its own connect.
    d.start(short_task(&["10.0.0.2:80"]).with_header("Connection", "Keep-Alive"));
    let c = d.connects();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].1, addr(2));
    assert_eq!(d.engine.short_link_idle(), 1, "the idle one stays");
    assert!(!d.aborted(conn));
}

#[test]
fn a_network_change_or_redo_closes_idle_connections() {
    let mut d = Drive::new();
    let conn = d.fresh_keep_alive_exchange(Some("timeout=30"));
    d.engine.redo_tasks(d.now);
    d.drain();
    assert!(d.aborted(conn));
    assert_eq!(d.engine.short_link_idle(), 0);

    let mut d = Drive::new();
    let conn = d.fresh_keep_alive_exchange(Some("timeout=30"));
    d.engine
        .set_network(d.now, phobos_plugin_api::NetKind::Mobile, "cell-1");
    d.drain();
    assert!(d.aborted(conn));
    assert_eq!(d.engine.short_link_idle(), 0);
}

#[test]
fn at_most_sixteen_idle_connections_are_kept_the_soonest_to_expire_going_first() {
    let mut d = Drive::new();
    let mut kept = Vec::new();
    for i in 1..=17u8 {
        let id = d.start(
            short_task(&[&format!("10.0.1.{i}:80")]).with_header("Connection", "Keep-Alive"),
        );
        let (conn, _, _) = d.connects().pop().unwrap();
        d.connected(conn);
        d.exchanges();
        // The first one has the shortest keep-alive.
        let t = if i == 1 { "timeout=10" } else { "timeout=50" };
        d.respond_reusable(conn, Some(t));
        assert!(d.end(id).is_some());
        kept.push(conn);
    }
    assert_eq!(d.engine.short_link_idle(), 16);
    assert!(d.aborted(kept[0]), "the soonest to expire was evicted");
    assert!(kept[1..].iter().all(|c| !d.aborted(*c)));
}

#[test]
fn a_response_for_a_connection_the_core_gave_up_is_closed() {
    let mut d = Drive::new();
    let id = d.start(keep_alive_task());
    let (conn, _, _) = d.connects().pop().unwrap();
    d.connected(conn);
    d.exchanges();
    d.engine.cancel_task(d.now, id);
    d.drain();
    d.actions.clear();
    d.respond_reusable(conn, Some("timeout=30"));
    assert!(d.aborted(conn));
    assert_eq!(d.engine.short_link_idle(), 0);
}

#[test]
fn a_short_budget_is_shared_by_the_attempts_so_the_retry_fits() {
    // 15 s for two attempts: Mars's 12 s first packet would leave the retry 2 s after its
    // 1 s pause; Phobos caps each attempt at (15 s − 1 s) ÷ 2 = 7 s.
    let budget = Duration::from_secs(15);
    let mut d = Drive::new();
    let id = d.start(short_task(&["10.0.0.1:80", "10.0.0.2:80"]).with_total_timeout(budget));
    let (conn, _, _) = d.connects()[0].clone();
    d.connected(conn);
    assert_eq!(d.exchanges().len(), 1);
    let sent = d.now;
    assert_eq!(d.first_packet_timeout(), Duration::from_secs(7));
    d.advance_to(sent + Duration::from_secs(7));
    assert_eq!(
        d.retries(id),
        vec![TaskError::Timeout(TimeoutLevel::FirstPacket)]
    );
    d.advance(Duration::from_secs(1));
    let (retry, a, _) = d.connects().pop().expect("the retry connects");
    assert_eq!(a, addr(2));
    d.connected(retry);
    d.exchanges();
    // What is left (7 s) is this last attempt's.
    assert_eq!(d.first_packet_timeout(), Duration::from_secs(7));
    d.respond(retry, 200, b"late but in time");
    assert!(d.end(id).is_some_and(|e| e.outcome.is_ok()));

    // Mars keeps its 12 s.
    let mut d = Drive::with(|b| b.connect_profile(crate::ConnectProfile::MarsClassic));
    d.start(short_task(&["10.0.0.1:80"]).with_total_timeout(budget));
    let (conn, _, _) = d.connects()[0].clone();
    d.connected(conn);
    d.exchanges();
    assert_eq!(d.first_packet_timeout(), Duration::from_secs(12));

    // Long budgets keep Mars's numbers; the share never goes below 4 s.
    let mut d = Drive::new();
    d.start(short_task(&["10.0.0.1:80"]));
    let (conn, _, _) = d.connects()[0].clone();
    d.connected(conn);
    d.exchanges();
    assert_eq!(d.first_packet_timeout(), Duration::from_secs(12));
    let mut d = Drive::new();
    d.start(short_task(&["10.0.0.1:80"]).with_total_timeout(Duration::from_secs(5)));
    let (conn, _, _) = d.connects()[0].clone();
    d.connected(conn);
    d.exchanges();
    assert_eq!(d.first_packet_timeout(), Duration::from_secs(4));
}

/// The `ShortConnect` actions so far, as (task, connection), taken out.
fn connects_by_task(d: &mut Drive) -> Vec<(TaskId, ConnId)> {
    let mut out = Vec::new();
    d.actions.retain(|a| match a {
        Action::ShortConnect { task, attempt, .. } => {
            out.push((*task, *attempt));
            false
        }
        _ => true,
    });
    out
}

#[test]
fn a_burst_runs_at_most_max_running_attempts_and_the_rest_wait_in_priority_order() {
    let mut d = Drive::with(|b| b.short_link(crate::ShortLinkConfig::default().max_running(2)));
    let spec = |p: u8| short_task(&["10.0.0.1:80"]).with_priority(p);
    let a = d.start(spec(3));
    let b = d.start(spec(3));
    let c = d.start(spec(3));
    let urgent = d.start(spec(0));
    let e = d.start(spec(3));
    // Two places: the first two tasks connect; the others wait.
    let first = connects_by_task(&mut d);
    assert_eq!(first.iter().map(|c| c.0).collect::<Vec<_>>(), [a, b]);
    // A task that ends hands its place to the most urgent waiting one.
    d.connected(first[0].1);
    d.respond(first[0].1, 200, b"ok");
    assert!(d.end(a).is_some_and(|e| e.outcome.is_ok()));
    let next = connects_by_task(&mut d);
    assert_eq!(next.iter().map(|c| c.0).collect::<Vec<_>>(), [urgent]);
    let urgent_conn = next[0].1;
    // A failed attempt frees its place during the retry pause: the next waiting task
    // gets it, and the retry waits its turn.
    d.connected(first[1].1);
    d.respond(first[1].1, 503, b"busy");
    assert_eq!(d.retries(b).len(), 1);
    let next = connects_by_task(&mut d);
    assert_eq!(next.iter().map(|c| c.0).collect::<Vec<_>>(), [c]);
    let c_conn = next[0].1;
    d.advance(Duration::from_millis(1500));
    let early = connects_by_task(&mut d);
    assert!(
        early.iter().all(|&(t, _)| t != b),
        "no place for the retry yet"
    );
    // A canceled waiting task ends at once and takes no place.
    assert!(d.engine.cancel_task(d.now, e));
    d.drain();
    assert_eq!(
        d.end(e).map(|end| end.outcome.clone().unwrap_err()),
        Some(TaskError::Canceled)
    );
    // Places free up: the retry of `b` goes, and nothing else is left.
    for conn in [urgent_conn, c_conn] {
        d.connected(conn);
        d.respond(conn, 200, b"ok");
    }
    let retry = connects_by_task(&mut d);
    assert_eq!(retry.iter().map(|c| c.0).collect::<Vec<_>>(), [b]);
    d.connected(retry[0].1);
    d.respond(retry[0].1, 200, b"ok");
    for id in [a, b, c, urgent] {
        assert!(d.end(id).is_some_and(|e| e.outcome.is_ok()), "{id:?}");
    }
    assert_eq!(d.engine.task_count(), 0);
}

#[test]
fn a_waiting_task_still_ends_at_its_total_timeout() {
    let mut d = Drive::with(|b| b.short_link(crate::ShortLinkConfig::default().max_running(1)));
    let busy = d.start(short_task(&["10.0.0.1:80"]));
    let waiting = d.start(short_task(&["10.0.0.1:80"]).with_total_timeout(Duration::from_secs(3)));
    let (task, conn) = connects_by_task(&mut d)[0];
    assert_eq!(task, busy);
    d.connected(conn);
    // The server stalls `busy`; `waiting` never gets a place and times out on its own clock.
    d.advance(Duration::from_secs(3));
    let end = d.end(waiting).expect("the waiting task ended");
    assert_eq!(
        end.outcome.clone().unwrap_err(),
        TaskError::Timeout(TimeoutLevel::Total)
    );
    assert!(d.end(busy).is_none());
    assert!(connects_by_task(&mut d).is_empty());
}

#[test]
fn places_are_per_host_so_a_silent_host_does_not_hold_up_another() {
    let mut d = Drive::with(|b| b.short_link(crate::ShortLinkConfig::default().max_running(2)));
    let silent: Vec<TaskId> = (0..4)
        .map(|_| d.start(short_task(&["10.0.0.1:80"])))
        .collect();
    let other = d.start(short_task(&["10.0.0.2:80"]));
    let started = connects_by_task(&mut d);
    // Two of the silent host's tasks hold its places, two wait; the other host's task goes.
    let tasks: Vec<TaskId> = started.iter().map(|c| c.0).collect();
    assert_eq!(tasks, [silent[0], silent[1], other]);
    let other_conn = started[2].1;
    d.connected(other_conn);
    d.respond(other_conn, 200, b"ok");
    assert!(d.end(other).is_some_and(|e| e.outcome.is_ok()));
    // The other host's end frees none of the silent host's places.
    assert!(connects_by_task(&mut d).is_empty());
    assert!(d.end(silent[2]).is_none() && d.end(silent[3]).is_none());
}

#[test]
fn a_request_encoder_builds_the_short_link_body_of_each_attempt_with_the_first_host() {
    let mut d = Drive::new();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let encoder = crate::RequestEncoder::new(move |cx| {
        if let crate::EncodeVia::ShortLink { host } = cx.via {
            record.lock().unwrap().push((cx.attempt, host.to_owned()));
        }
        Ok(crate::EncodedRequest::body(format!("try {}", cx.attempt)))
    });
    let id = d.start(
        short_task(&["10.0.0.1:80", "10.0.0.2:80"])
            .with_retry_count(1)
            .with_encoder(encoder),
    );
    for attempt in 1..=2 {
        let (conn, ..) = d.connects()[0].clone();
        d.connected(conn);
        let (_, req) = d.exchanges().pop().expect("exchange asked for");
        assert_eq!(req.body, Bytes::from(format!("try {attempt}")));
        assert_eq!(req.header("content-length"), Some("5"));
        if attempt == 1 {
            d.respond(conn, 503, b"busy");
            // The retry pause.
            d.now += Duration::from_secs(1);
            d.engine.handle_timeout(d.now);
            d.drain();
        } else {
            d.respond(conn, 200, b"done");
        }
    }
    assert!(d.end(id).expect("ended").outcome.is_ok());
    let first = "10.0.0.1:80".to_owned();
    assert_eq!(*seen.lock().unwrap(), [(1, first.clone()), (2, first)]);
}

#[test]
fn a_short_link_request_encoder_that_refuses_ends_the_task_before_any_connect() {
    let mut d = Drive::new();
    let encoder = crate::RequestEncoder::new(|_| Err(9));
    let id = d.start(short_task(&["10.0.0.1:80"]).with_encoder(encoder));
    assert!(d.connects().is_empty());
    assert_eq!(
        d.end(id).expect("ended").outcome,
        Err(TaskError::Codec(crate::CodecFailure::Encode(
            phobos_plugin_api::EncodeError::Other(9)
        )))
    );
}

/// §14: a short-link task that fails with budget left under its `total_timeout` is kept as
/// a zombie, started again after 60 s of quiet, and can still succeed.
/// Starts a short-link task with 120 s of budget and no retries whose only connect is
/// refused: kept as a zombie.
fn short_zombie(d: &mut Drive) -> TaskId {
    let id = d.start(
        short_task(&["10.0.0.1:80"])
            .with_retry_count(0)
            .with_total_timeout(Duration::from_secs(120)),
    );
    let (conn, ..) = d.connects()[0].clone();
    d.engine
        .handle_connect_failed(d.now, conn, DialError::Refused);
    d.drain();
    id
}

#[test]
fn a_failed_short_task_with_budget_left_lives_on_as_a_zombie() {
    let mut d = Drive::new();
    let id = short_zombie(&mut d);
    assert!(d.end(id).is_none(), "kept, not ended");
    assert!(d
        .events
        .iter()
        .any(|e| matches!(e, Event::TaskZombie { id: z, .. } if *z == id)));
    assert!(d.engine.has_task(id));
    assert_eq!(d.engine.zombie_count(), 1);
    // Restarted once 60 s passed with no task started.
    d.advance(Duration::from_secs(59));
    assert!(d.connects().is_empty());
    d.advance(Duration::from_secs(2));
    let (conn, ..) = d.connects()[0].clone();
    d.connected(conn);
    assert_eq!(d.exchanges().len(), 1);
    d.respond(conn, 200, b"late");
    let end = d.end(id).expect("ended");
    assert_eq!(&end.outcome.as_ref().unwrap().body[..], b"late");
    assert_eq!(end.profile.zombie_rounds, 1);
    assert_eq!(d.engine.zombie_count(), 0);
}

/// §14: any network success, short-link ones included, restarts the zombies at once.
#[test]
fn a_short_link_success_restarts_the_zombies() {
    let mut d = Drive::new();
    let zombie = short_zombie(&mut d);
    assert_eq!(d.engine.zombie_count(), 1);
    d.advance(Duration::from_secs(5));
    let ok = d.start(
        TaskSpec::new(CmdId(0), &b"other"[..])
            .with_channel(ChannelSelect::Short)
            .with_short_link("/cgi-bin/x", ["10.0.0.2:80"]),
    );
    let (conn, ..) = d.connects()[0].clone();
    d.connected(conn);
    d.respond(conn, 200, b"ok");
    assert!(d.end(ok).unwrap().outcome.is_ok());
    assert_eq!(d.engine.zombie_count(), 0, "restarted at once");
    assert_eq!(d.connects().len(), 1, "the zombie's new attempt");
    assert!(d.end(zombie).is_none());
}

#[test]
fn the_content_length_counts_the_body_the_codec_built() {
    // Before, the default header counted the task's 5 bytes while 9 went out: the server
    // waited for the rest, or (shorter) read a cut body.
    // A codec that wraps the short-link body in an envelope, overriding only `shortlink_body`.
    let codec = std::sync::Arc::new(super::harness::MarsTwisted {
        envelope: Some(b"env:"),
        ..super::harness::MarsTwisted::plain()
    });
    let mut d = Drive::of(
        super::harness::config_of(codec, &[long_link_addr()])
            .build()
            .unwrap(),
    );
    d.start(short_task(&["10.0.0.1:80"]).with_header("Content-Length", "2"));
    let (conn, _, _) = d.connects().pop().unwrap();
    d.connected(conn);
    let (_, req) = d.exchanges().pop().unwrap();
    assert_eq!(&req.body[..], b"env:hello");
    assert_eq!(req.header("content-length"), Some("9"));
}

#[test]
fn an_ipv6_literal_host_is_bracketed_in_the_host_header() {
    // Before, the request went out with `Host: ::1`, which RFC 9112 §3.2 has a server refuse.
    for (host, want) in [
        ("::1", "[::1]"),
        ("[::1]", "[::1]"),
        ("[::1]:8080", "[::1]:8080"),
    ] {
        let mut d = Drive::new();
        d.start(short_task(&[host]));
        let (conn, _, _) = d.connects().pop().expect("a literal host connects");
        d.connected(conn);
        let (_, req) = d.exchanges().pop().unwrap();
        assert_eq!(req.header("host"), Some(want), "{host}");
    }
}

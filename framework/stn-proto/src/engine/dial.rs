//! Which addresses a link tries, and in what order and rhythm (§9, §10).
//!
//! This is the one place that turns resolved addresses into connect attempts, so the later
//! IP-ranking work replaces [`plan_addresses`] and the race tuning lives in [`Dialer`].

use std::time::{Duration, Instant};

use phobos_plugin_api::{IpPort, ResolvedAddr};

use crate::io::{ConnId, DialError};

/// Orders a link's candidate addresses: resolved addresses in the order given, each combined
/// with its own port or every configured port, duplicates dropped, at most `max`.
///
/// Hook: IP ranking and bans (§11) replace this function.
pub(crate) fn plan_addresses(resolved: &[ResolvedAddr], ports: &[u16], max: usize) -> Vec<IpPort> {
    let mut out: Vec<IpPort> = Vec::new();
    for r in resolved {
        let ports: &[u16] = match &r.port {
            Some(p) => std::slice::from_ref(p),
            None => ports,
        };
        for &port in ports {
            let addr = IpPort::new(r.ip, port);
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    out.truncate(max);
    out
}

/// One connect cycle over an ordered address list: a staggered race (§9) with exact
/// deadlines. Start address 0 at once; start the next one `interval` after the previous
/// start while fewer than `max_concurrent` attempts are in flight; each attempt fails on its
/// own after `timeout`; the first attempt to connect wins.
#[derive(Debug)]
pub(crate) struct Dialer {
    addrs: Vec<IpPort>,
    next: usize,
    pub(crate) in_flight: Vec<InFlight>,
    last_start: Option<Instant>,
    /// Failures so far: `None` for a timeout.
    failures: Vec<Option<DialError>>,
}

/// An attempt in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InFlight {
    pub(crate) conn: ConnId,
    pub(crate) addr: IpPort,
    /// Position of the address in the cycle's list.
    pub(crate) index: usize,
    pub(crate) started: Instant,
}

/// What the dialer wants done next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DialStep {
    /// Start an attempt to this address now.
    Start(IpPort),
    /// Wait until this instant for the next start.
    WaitUntil(Instant),
    /// Nothing to start; wait for attempts in flight.
    Idle,
    /// Every address failed.
    Exhausted,
}

impl Dialer {
    pub(crate) fn new(addrs: Vec<IpPort>) -> Self {
        Dialer {
            addrs,
            next: 0,
            in_flight: Vec::new(),
            last_start: None,
            failures: Vec::new(),
        }
    }

    /// The next step at `now`. Call [`Dialer::started`] after acting on `Start`.
    pub(crate) fn step(&self, now: Instant, interval: Duration, max_concurrent: usize) -> DialStep {
        if self.next >= self.addrs.len() {
            return if self.in_flight.is_empty() {
                DialStep::Exhausted
            } else {
                DialStep::Idle
            };
        }
        let due = self.last_start.map_or(now, |t| t + interval);
        // Design: with nothing in flight (every earlier address already failed) there is
        // nothing to wait for, so the next address starts at once instead of after the step
        // (Mars waits the full step even after a refusal, §9).
        if self.in_flight.is_empty() || (due <= now && self.in_flight.len() < max_concurrent) {
            return DialStep::Start(self.addrs[self.next]);
        }
        if self.in_flight.len() >= max_concurrent {
            return DialStep::Idle;
        }
        DialStep::WaitUntil(due)
    }

    pub(crate) fn started(&mut self, now: Instant, conn: ConnId) {
        let addr = self.addrs[self.next];
        self.next += 1;
        self.last_start = Some(now);
        self.in_flight.push(InFlight {
            conn,
            addr,
            index: self.next - 1,
            started: now,
        });
    }

    /// Removes a failed attempt; `None` for a timeout. Returns its address if it was ours.
    pub(crate) fn failed(&mut self, conn: ConnId, error: Option<DialError>) -> Option<IpPort> {
        let pos = self.in_flight.iter().position(|a| a.conn == conn)?;
        let attempt = self.in_flight.swap_remove(pos);
        self.failures.push(error);
        Some(attempt.addr)
    }

    /// Takes the winner out; the rest of `in_flight` are losers to abort.
    pub(crate) fn won(&mut self, conn: ConnId) -> Option<InFlight> {
        let pos = self.in_flight.iter().position(|a| a.conn == conn)?;
        Some(self.in_flight.swap_remove(pos))
    }

    /// The cycle's failure: a connect timeout if every address timed out, else the last
    /// reported error.
    pub(crate) fn last_error(&self) -> Option<DialError> {
        self.failures.iter().rev().find_map(|f| *f)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use phobos_plugin_api::AddrSource;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn plan_combines_ports_dedups_and_truncates() {
        let r = |i, port| ResolvedAddr {
            ip: ip(i),
            port,
            source: AddrSource::SystemDns,
        };
        let plan = plan_addresses(
            &[r(1, None), r(2, Some(9)), r(1, None), r(3, None)],
            &[80, 443],
            4,
        );
        assert_eq!(
            plan,
            vec![
                IpPort::new(ip(1), 80),
                IpPort::new(ip(1), 443),
                IpPort::new(ip(2), 9),
                IpPort::new(ip(3), 80),
            ]
        );
    }

    #[test]
    fn race_staggers_starts_and_caps_concurrency() {
        let t0 = crate::tests::epoch::epoch();
        let i = Duration::from_millis(2_500);
        let addrs: Vec<IpPort> = (1..=5).map(|n| IpPort::new(ip(n), 80)).collect();
        let mut d = Dialer::new(addrs.clone());
        assert_eq!(d.step(t0, i, 3), DialStep::Start(addrs[0]));
        d.started(t0, ConnId(1));
        assert_eq!(d.step(t0, i, 3), DialStep::WaitUntil(t0 + i));
        d.started(t0 + i, ConnId(2));
        d.started(t0 + i * 2, ConnId(3));
        assert_eq!(d.step(t0 + i * 3, i, 3), DialStep::Idle);
        assert_eq!(d.failed(ConnId(1), None), Some(addrs[0]));
        assert_eq!(d.step(t0 + i * 3, i, 3), DialStep::Start(addrs[3]));
        assert_eq!(d.won(ConnId(2)).map(|a| a.addr), Some(addrs[1]));
        assert_eq!(d.in_flight.len(), 1);
    }

    #[test]
    fn a_refusal_with_nothing_in_flight_starts_the_next_address_at_once() {
        let t0 = crate::tests::epoch::epoch();
        let i = Duration::from_millis(2_500);
        let addrs: Vec<IpPort> = (1..=2).map(|n| IpPort::new(ip(n), 80)).collect();
        let mut d = Dialer::new(addrs.clone());
        d.started(t0, ConnId(1));
        d.failed(ConnId(1), Some(DialError::Refused));
        assert_eq!(d.step(t0, i, 3), DialStep::Start(addrs[1]));
        d.started(t0, ConnId(2));
        d.failed(ConnId(2), None);
        assert_eq!(d.step(t0, i, 3), DialStep::Exhausted);
        assert_eq!(d.last_error(), Some(DialError::Refused));
    }
}

//! The connect race of one cycle (§9; RFC 8305 for the Phobos profile).
//!
//! # Internal API (shared by the long link and the short link)
//!
//! A cycle's candidates come from [`Ranking::plan`](super::ranking::Ranking::plan). A
//! [`Dialer`] then races them: the owner calls [`Dialer::step`] and, for
//! [`DialStep::Start`], opens the attempt, arms its own per-attempt timeout and calls
//! [`Dialer::started`] with the stagger before the next start (fixed for Mars, adapted from
//! RTTs for Phobos: [`stagger`]); it reports results with [`Dialer::failed`] and
//! [`Dialer::won`] and calls `step` again after each. [`Dialer::attempts`] is the log the
//! cycle report is built from. The dialer holds no timer and reads no clock.

use std::time::{Duration, Instant};

use phobos_plugin_api::IpPort;

use super::ranking::Candidate;
use crate::config::{Config, ConnectProfile, HANDSHAKE_REDIALS};
use crate::io::{AttemptOutcome, ConnId, DialError};

/// How a [`Dialer`] paces its starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DialRules {
    /// At most this many attempts in flight.
    pub(crate) max_concurrent: usize,
    /// Start the next address as soon as an attempt fails (Phobos: a refusal says nothing
    /// about the next address, so waiting out the stagger only adds latency). Mars waits for
    /// the step unless nothing is left in flight.
    pub(crate) start_on_failure: bool,
    /// Extra attempts to an address already being tried, once every address has started
    /// (Phobos's [`Racing::hedges`](crate::Racing::hedges); Mars: none).
    pub(crate) hedges: usize,
    /// Hedges start only within this time of the original attempt's start (half the
    /// connect timeout: later, the kernel's own SYN retransmissions are as good).
    pub(crate) hedge_within: Duration,
}

impl DialRules {
    /// The rules of the config's profile.
    pub(crate) fn for_config(cfg: &Config) -> Self {
        match cfg.connect_profile {
            ConnectProfile::MarsClassic => DialRules {
                max_concurrent: cfg.timing.race_max_concurrent,
                start_on_failure: false,
                hedges: 0,
                hedge_within: Duration::ZERO,
            },
            _ => DialRules {
                max_concurrent: cfg.racing.max_concurrent,
                start_on_failure: true,
                hedges: cfg.racing.hedges,
                hedge_within: cfg.timing.connect_timeout / 2,
            },
        }
    }
}

/// The delay between starting an attempt to an address and starting the next one.
///
/// Mars: the fixed [`Timing::race_interval`](crate::Timing::race_interval). Phobos:
/// `clamp(2 × rtt, stagger_min, stagger_max)` with `rtt` the address's own last connect time,
/// else the network's smoothed connect time, else [`Racing::stagger`](crate::Racing::stagger).
pub(crate) fn stagger(
    cfg: &Config,
    addr_rtt: Option<Duration>,
    srtt: Option<Duration>,
) -> Duration {
    match cfg.connect_profile {
        ConnectProfile::MarsClassic => cfg.timing.race_interval,
        _ => {
            let r = &cfg.racing;
            match addr_rtt.or(srtt) {
                Some(rtt) => (rtt * 2).clamp(r.stagger_min, r.stagger_max),
                None => r.stagger,
            }
        }
    }
}

/// One connect cycle's race over an ordered candidate list, with exact deadlines. Address 0
/// starts at once; the next one when its stagger has passed and fewer than
/// `max_concurrent` attempts are in flight, or at once when nothing is in flight (and, for
/// Phobos, when an attempt has failed since the last start). The first attempt to connect
/// wins. Once every address has started, a *hedge* (a fresh attempt to the address of the
/// oldest attempt still pending) starts when the stagger has passed, while hedges are left
/// and fewer than `max_concurrent` attempts are in flight.
#[derive(Debug)]
pub(crate) struct Dialer {
    candidates: Vec<Candidate>,
    rules: DialRules,
    next: usize,
    pub(crate) in_flight: Vec<InFlight>,
    next_due: Option<Instant>,
    failed_since_start: bool,
    /// Hedged attempts still allowed this cycle.
    hedges_left: usize,
    /// Addresses (by index) to dial again at once: their handshake broke.
    redial: Vec<usize>,
    /// Redials left this cycle for handshakes that ran out of time
    /// ([`HANDSHAKE_REDIALS`]).
    stalled_redials_left: usize,
    /// Failures so far: `None` for a timeout.
    failures: Vec<Option<DialError>>,
    log: Vec<AttemptLog>,
}

/// An attempt in progress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InFlight {
    pub(crate) conn: ConnId,
    pub(crate) addr: IpPort,
    /// Position of the address in the cycle's list.
    pub(crate) index: usize,
    pub(crate) started: Instant,
    /// When the attempt this one belongs to started (a hedge's original attempt).
    pub(crate) origin: Instant,
    /// A hedge: a repeat of an attempt already in flight.
    pub(crate) hedge: bool,
    /// Its transport is up and a handshake runs ([`Dialer::established`]).
    pub(crate) established: bool,
}

/// One attempt of the cycle, for its report.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttemptLog {
    pub(crate) candidate: Candidate,
    pub(crate) conn: ConnId,
    pub(crate) started: Instant,
    pub(crate) ended: Option<(Instant, AttemptOutcome)>,
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
    pub(crate) fn new(candidates: Vec<Candidate>, rules: DialRules) -> Self {
        Dialer {
            candidates,
            rules,
            next: 0,
            in_flight: Vec::new(),
            next_due: None,
            failed_since_start: false,
            hedges_left: rules.hedges,
            redial: Vec::new(),
            stalled_redials_left: HANDSHAKE_REDIALS,
            failures: Vec::new(),
            log: Vec::new(),
        }
    }

    /// The next step at `now`. Call [`Dialer::started`] after acting on `Start`.
    pub(crate) fn step(&self, now: Instant) -> DialStep {
        if let Some(&index) = self.redial.first() {
            if self.in_flight.len() < self.rules.max_concurrent {
                return DialStep::Start(self.candidates[index].addr);
            }
        }
        if self.next >= self.candidates.len() {
            if self.in_flight.is_empty() {
                return DialStep::Exhausted;
            }
            // Design: every address has started and one is still silent after the stagger:
            // its SYN (or the SYN-ACK) was most likely lost, and the kernel resends it only
            // after 1 s, then 3 s, 7 s. A fresh attempt to the same address is cheaper.
            if let Some(target) = self.hedge_target(now) {
                let due = self.next_due.unwrap_or(now);
                if due <= now {
                    return DialStep::Start(target.addr);
                }
                return DialStep::WaitUntil(due);
            }
            return DialStep::Idle;
        }
        let next = self.candidates[self.next].addr;
        // Design: with nothing in flight (every earlier address already failed) there is
        // nothing to wait for, so the next address starts at once instead of after the step
        // (Mars waits the full step even after a refusal, §9).
        if self.in_flight.is_empty() {
            return DialStep::Start(next);
        }
        if self.in_flight.len() >= self.rules.max_concurrent {
            return DialStep::Idle;
        }
        let due = self.next_due.unwrap_or(now);
        if due <= now || (self.rules.start_on_failure && self.failed_since_start) {
            return DialStep::Start(next);
        }
        DialStep::WaitUntil(due)
    }

    /// The attempt asked for by `Start` is under way as `conn`; the next start is due
    /// `stagger` from now. Returns the instant its connect timeout counts from: `now`, or,
    /// for a hedge, the start of the attempt it repeats (a hedge is a second SYN of that
    /// attempt, so it does not lengthen the cycle).
    pub(crate) fn started(&mut self, now: Instant, conn: ConnId, stagger: Duration) -> Instant {
        let redial = !self.redial.is_empty() && self.in_flight.len() < self.rules.max_concurrent;
        let (index, origin, hedge) = match self.hedge_target(now) {
            _ if redial => (self.redial.remove(0), now, true),
            Some(target) if self.next >= self.candidates.len() => {
                self.hedges_left -= 1;
                (target.index, target.origin, true)
            }
            _ => {
                self.next += 1;
                (self.next - 1, now, false)
            }
        };
        let candidate = self.candidates[index];
        self.in_flight.push(InFlight {
            conn,
            addr: candidate.addr,
            index,
            started: now,
            origin,
            hedge,
            established: false,
        });
        self.log.push(AttemptLog {
            candidate,
            conn,
            started: now,
            ended: None,
        });
        self.next_due = Some(now + stagger);
        self.failed_since_start = false;
        origin
    }

    /// Removes a failed attempt; `None` for a timeout. Returns it if it was ours.
    pub(crate) fn failed(
        &mut self,
        now: Instant,
        conn: ConnId,
        error: Option<DialError>,
    ) -> Option<InFlight> {
        let pos = self.in_flight.iter().position(|a| a.conn == conn)?;
        let attempt = self.in_flight.swap_remove(pos);
        self.failures.push(error);
        self.failed_since_start = true;
        // Design: a TLS handshake that broke on damaged bytes got an answer, so the path
        // works; only its bytes were spoiled. Dialing the same address again at once is
        // cheaper than the next cycle (Phobos, from the hedge budget). A handshake refused
        // for any other reason (a proxy's refusal, a protocol mismatch, a certificate) is a
        // verdict and is not repeated.
        if error == Some(DialError::Damaged) && self.hedges_left > 0 {
            self.hedges_left -= 1;
            self.redial.push(attempt.index);
        }
        let outcome = match error {
            None => AttemptOutcome::TimedOut,
            Some(DialError::Refused) => AttemptOutcome::Refused,
            Some(e) => AttemptOutcome::Failed(e),
        };
        self.end(conn, now, outcome);
        Some(attempt)
    }

    /// Removes an attempt whose transport was up and whose handshake ran out of time;
    /// returns it if it was ours. It counts as a timeout, and its address is dialed again
    /// at once while the cycle's stalled-handshake redials last: the path took the
    /// connection, so a fresh one may well get through (the stall was on that
    /// connection: a middlebox's state, bytes lost in an outage).
    pub(crate) fn handshake_timed_out(&mut self, now: Instant, conn: ConnId) -> Option<InFlight> {
        let pos = self.in_flight.iter().position(|a| a.conn == conn)?;
        let attempt = self.in_flight.swap_remove(pos);
        self.failures.push(None);
        self.failed_since_start = true;
        if self.stalled_redials_left > 0 {
            self.stalled_redials_left -= 1;
            self.redial.push(attempt.index);
        }
        self.end(conn, now, AttemptOutcome::HandshakeTimedOut);
        Some(attempt)
    }

    /// The attempt `conn` if it is in flight.
    pub(crate) fn in_flight(&self, conn: ConnId) -> Option<&InFlight> {
        self.in_flight.iter().find(|a| a.conn == conn)
    }

    /// The transport of attempt `conn` is up (its handshake runs): no hedge follows it.
    pub(crate) fn established(&mut self, conn: ConnId) {
        if let Some(a) = self.in_flight.iter_mut().find(|a| a.conn == conn) {
            a.established = true;
        }
    }

    /// Takes the winner out; the rest of `in_flight` are losers to [`abort_all`].
    ///
    /// [`abort_all`]: Self::abort_all
    pub(crate) fn won(&mut self, now: Instant, conn: ConnId) -> Option<InFlight> {
        let pos = self.in_flight.iter().position(|a| a.conn == conn)?;
        self.end(conn, now, AttemptOutcome::Won);
        Some(self.in_flight.swap_remove(pos))
    }

    /// Takes every attempt still in flight out, logged as aborted.
    pub(crate) fn abort_all(&mut self, now: Instant) -> Vec<InFlight> {
        let all = std::mem::take(&mut self.in_flight);
        for a in &all {
            self.end(a.conn, now, AttemptOutcome::Aborted);
        }
        all
    }

    /// The cycle's failure: a connect timeout if every address timed out, else the last
    /// reported error.
    pub(crate) fn last_error(&self) -> Option<DialError> {
        self.failures.iter().rev().find_map(|f| *f)
    }

    /// The attempt a hedge would repeat (the oldest one in flight), if a hedge may start.
    ///
    /// Design: no hedge once an attempt of the cycle has failed: an answer that came back
    /// (a refusal, an unreachable) shows the path carries packets, so a silent address beside
    /// it is more likely filtered than unlucky, and more SYNs to it would only add load. Nor
    /// once an attempt's transport is up: its SYN was not lost, and a hedge would be a whole
    /// second TCP and TLS handshake for the server, at every mass reconnect (on a path of
    /// 125 ms or more, the first connect after a network change opened up to four); a
    /// handshake that stalls has its own timeout and redial.
    fn hedge_target(&self, now: Instant) -> Option<InFlight> {
        if self.hedges_left == 0
            || self.in_flight.len() >= self.rules.max_concurrent
            || !self.failures.is_empty()
            || self.in_flight.iter().any(|a| a.established)
        {
            return None;
        }
        self.in_flight
            .iter()
            .min_by_key(|a| a.origin)
            .filter(|a| now < a.origin + self.rules.hedge_within)
            .copied()
    }

    /// Whether the cycle's list holds an IPv6 address.
    pub(crate) fn has_ipv6(&self) -> bool {
        self.candidates.iter().any(|c| c.addr.ip.is_ipv6())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// How many addresses the cycle planned.
    pub(crate) fn planned(&self) -> usize {
        self.candidates.len()
    }

    /// Every attempt started so far, in start order.
    pub(crate) fn attempts(&self) -> &[AttemptLog] {
        &self.log
    }

    fn end(&mut self, conn: ConnId, now: Instant, outcome: AttemptOutcome) {
        if let Some(l) = self.log.iter_mut().find(|l| l.conn == conn) {
            l.ended = Some((now, outcome));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use phobos_plugin_api::AddrSource;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn candidates(n: u8) -> Vec<Candidate> {
        (1..=n)
            .map(|i| Candidate {
                addr: IpPort::new(ip(i), 80),
                source: AddrSource::NewDns,
            })
            .collect()
    }

    const MARS: DialRules = DialRules {
        max_concurrent: 3,
        start_on_failure: false,
        hedges: 0,
        hedge_within: Duration::ZERO,
    };

    #[test]
    fn race_staggers_starts_and_caps_concurrency() {
        let t0 = crate::tests::epoch::epoch();
        let i = Duration::from_millis(2_500);
        let c = candidates(5);
        let addrs: Vec<IpPort> = c.iter().map(|c| c.addr).collect();
        let mut d = Dialer::new(c, MARS);
        assert_eq!(d.step(t0), DialStep::Start(addrs[0]));
        d.started(t0, ConnId(1), i);
        assert_eq!(d.step(t0), DialStep::WaitUntil(t0 + i));
        d.started(t0 + i, ConnId(2), i);
        d.started(t0 + i * 2, ConnId(3), i);
        assert_eq!(d.step(t0 + i * 3), DialStep::Idle);
        assert_eq!(
            d.failed(t0 + i * 3, ConnId(1), None).map(|a| a.addr),
            Some(addrs[0])
        );
        assert_eq!(d.step(t0 + i * 3), DialStep::Start(addrs[3]));
        assert_eq!(d.won(t0 + i * 3, ConnId(2)).map(|a| a.addr), Some(addrs[1]));
        assert_eq!(d.in_flight.len(), 1);
        let aborted = d.abort_all(t0 + i * 3);
        assert_eq!(aborted.len(), 1);
        let outcomes: Vec<_> = d.attempts().iter().map(|l| l.ended.unwrap().1).collect();
        assert_eq!(
            outcomes,
            vec![
                AttemptOutcome::TimedOut,
                AttemptOutcome::Won,
                AttemptOutcome::Aborted
            ]
        );
    }

    #[test]
    fn a_damaged_handshake_redials_the_same_address_at_once_within_the_hedges() {
        let t0 = crate::tests::epoch::epoch();
        let s = Duration::from_millis(250);
        let c = candidates(2);
        let rules = DialRules {
            max_concurrent: 4,
            start_on_failure: true,
            hedges: 2,
            hedge_within: Duration::from_secs(5),
        };
        let mut d = Dialer::new(c.clone(), rules);
        d.started(t0, ConnId(1), s);
        let t1 = t0 + Duration::from_millis(30);
        d.failed(t1, ConnId(1), Some(DialError::Damaged));
        // The same address again, ahead of the next one, with a fresh connect timeout.
        assert_eq!(d.step(t1), DialStep::Start(c[0].addr));
        assert_eq!(d.started(t1, ConnId(2), s), t1);
        assert_eq!(d.step(t1), DialStep::WaitUntil(t1 + s));
        d.failed(t1, ConnId(2), Some(DialError::Damaged));
        assert_eq!(d.step(t1), DialStep::Start(c[0].addr));
        d.started(t1, ConnId(3), s);
        // The budget is spent: the third broken handshake moves on to the next address.
        d.failed(t1, ConnId(3), Some(DialError::Damaged));
        assert_eq!(d.step(t1), DialStep::Start(c[1].addr));
        d.started(t1, ConnId(4), s);
        // A handshake refused for another reason is a verdict: no redial.
        d.failed(t1, ConnId(4), Some(DialError::Handshake));
        assert_eq!(d.step(t1), DialStep::Exhausted);

        // Mars (no hedges) never redials.
        let mut d = Dialer::new(c.clone(), MARS);
        d.started(t0, ConnId(1), s);
        d.failed(t1, ConnId(1), Some(DialError::Damaged));
        assert_eq!(d.step(t1), DialStep::Start(c[1].addr));
    }

    #[test]
    fn a_refusal_with_nothing_in_flight_starts_the_next_address_at_once() {
        let t0 = crate::tests::epoch::epoch();
        let i = Duration::from_millis(2_500);
        let c = candidates(2);
        let mut d = Dialer::new(c.clone(), MARS);
        d.started(t0, ConnId(1), i);
        d.failed(t0, ConnId(1), Some(DialError::Refused));
        assert_eq!(d.step(t0), DialStep::Start(c[1].addr));
        d.started(t0, ConnId(2), i);
        d.failed(t0, ConnId(2), None);
        assert_eq!(d.step(t0), DialStep::Exhausted);
        assert_eq!(d.last_error(), Some(DialError::Refused));
    }

    #[test]
    fn phobos_starts_the_next_address_when_one_fails_even_with_others_in_flight() {
        let t0 = crate::tests::epoch::epoch();
        let s = Duration::from_millis(250);
        let c = candidates(3);
        let rules = DialRules {
            max_concurrent: 4,
            start_on_failure: true,
            hedges: 0,
            hedge_within: Duration::ZERO,
        };
        let mut d = Dialer::new(c.clone(), rules);
        d.started(t0, ConnId(1), s);
        d.started(t0 + s, ConnId(2), s);
        assert_eq!(d.step(t0 + s), DialStep::WaitUntil(t0 + s * 2));
        d.failed(t0 + s + s / 2, ConnId(1), Some(DialError::Unreachable));
        assert_eq!(d.step(t0 + s + s / 2), DialStep::Start(c[2].addr));
        // Mars would wait for the step.
        let mut d = Dialer::new(c.clone(), MARS);
        d.started(t0, ConnId(1), s);
        d.started(t0 + s, ConnId(2), s);
        d.failed(t0 + s + s / 2, ConnId(1), Some(DialError::Unreachable));
        assert_eq!(d.step(t0 + s + s / 2), DialStep::WaitUntil(t0 + s * 2));
    }

    #[test]
    fn the_stagger_adapts_to_rtt_within_bounds() {
        let codec = Arc::new(phobos_codec_mars::MarsCodec::default());
        let addr = IpPort::new(ip(1), 80);
        let cfg = Config::builder(codec)
            .link(crate::LinkConfig::new("l").addrs([addr]))
            .build()
            .unwrap();
        let ms = Duration::from_millis;
        assert_eq!(stagger(&cfg, None, None), ms(250));
        assert_eq!(stagger(&cfg, None, Some(ms(80))), ms(160));
        assert_eq!(
            stagger(&cfg, Some(ms(300)), Some(ms(80))),
            ms(600),
            "own RTT first"
        );
        assert_eq!(stagger(&cfg, Some(ms(1)), None), ms(100), "lower bound");
        assert_eq!(
            stagger(&cfg, Some(ms(5_000)), None),
            ms(2_000),
            "upper bound"
        );
        let mut mars = cfg.clone();
        mars.connect_profile = ConnectProfile::MarsClassic;
        assert_eq!(stagger(&mars, Some(ms(1)), None), ms(2_500));
    }
}

//! The IP source chain walk of one connect cycle (spec §10.2).
//!
//! # Internal API (shared by the long link and the short link)
//!
//! [`ChainWalk::new`] takes the hosts; [`ChainWalk::next_call`] names the next (host, source)
//! to ask, skipping primary sources once a host has a primary answer, or `None` when the walk
//! is over; the owner sends one `Action::Resolve` for it, arms one timer at the source's
//! limit, and reports the answer with [`ChainWalk::answer`] (a timeout or an error is an
//! empty answer). [`ChainWalk::answers`] hands the collected addresses to
//! [`Ranking::plan`](super::ranking::Ranking::plan).

use phobos_plugin_api::{AddrSource, ResolvedAddr};

use super::ranking::Answers;
use crate::config::{SourceRole, SourceSpec};

/// Where one cycle's resolution stands.
#[derive(Debug)]
pub(crate) struct ChainWalk {
    hosts: Vec<String>,
    host: usize,
    /// The next source to consider for `host`.
    source: usize,
    /// The call in flight: (host index, source index).
    pub(crate) current: Option<(usize, usize)>,
    answers: Answers,
    finished: bool,
}

impl ChainWalk {
    pub(crate) fn new(hosts: Vec<String>) -> Self {
        let n = hosts.len();
        ChainWalk {
            hosts,
            host: 0,
            source: 0,
            current: None,
            answers: Answers {
                hosts: vec![Vec::new(); n],
                ..Answers::default()
            },
            finished: false,
        }
    }

    /// The next call to make: `(host, source index)`, or `None` when the walk is over.
    pub(crate) fn next_call(&mut self, sources: &[SourceSpec]) -> Option<(String, usize)> {
        if self.finished {
            return None;
        }
        while self.host < self.hosts.len() {
            while self.source < sources.len() {
                let s = self.source;
                self.source += 1;
                let has_primary = !self.answers.hosts[self.host].is_empty();
                if sources[s].role == SourceRole::Primary && has_primary {
                    continue;
                }
                self.current = Some((self.host, s));
                return Some((self.hosts[self.host].clone(), s));
            }
            self.host += 1;
            self.source = 0;
        }
        self.finished = true;
        None
    }

    /// The call in flight, as `(host, source index)`.
    pub(crate) fn in_flight(&self) -> Option<(String, usize)> {
        self.current.map(|(h, s)| (self.hosts[h].clone(), s))
    }

    /// Whether `host`/`source` is the call in flight.
    pub(crate) fn is_current(&self, host: &str, source: usize) -> bool {
        self.current
            .is_some_and(|(h, s)| s == source && self.hosts[h] == host)
    }

    /// The answer to the call in flight (empty for a timeout or an error). Debug-tagged
    /// addresses end the walk: a debug list is used alone.
    ///
    /// Addresses nothing can connect to (see [`is_dialable`]) are dropped first: an answer
    /// of only those (a filtering resolver's `0.0.0.0`) counts as no answer, and the next
    /// source is asked (§10.2: system DNS is used when app DNS "returns nothing").
    pub(crate) fn answer(&mut self, mut found: Vec<ResolvedAddr>) {
        let Some((h, _)) = self.current.take() else {
            return;
        };
        found.retain(is_dialable);
        if found.iter().any(|a| a.source == AddrSource::Debug) {
            self.answers.debug = found
                .into_iter()
                .filter(|a| a.source == AddrSource::Debug)
                .collect();
            self.finished = true;
            return;
        }
        let (backups, primary): (Vec<ResolvedAddr>, Vec<ResolvedAddr>) = found
            .into_iter()
            .partition(|a| a.source == AddrSource::Backup);
        self.answers.backups.extend(backups);
        if self.answers.hosts[h].is_empty() {
            self.answers.hosts[h] = primary;
        }
    }

    /// What the walk found.
    pub(crate) fn answers(&self) -> &Answers {
        &self.answers
    }
}

/// Whether an IP source's answer `addr` is one a connection can be made to: not the
/// unspecified address (`0.0.0.0`, `::`), a multicast or the broadcast address, nor port 0.
/// The engine drops the others from every answer.
pub fn is_dialable(addr: &ResolvedAddr) -> bool {
    addr.port != Some(0) && super::ranking::dialable_ip(addr.ip)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;

    fn addr(last: u8, source: AddrSource) -> ResolvedAddr {
        ResolvedAddr {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            port: None,
            source,
        }
    }

    /// An answer of only addresses nothing can connect to (a filtering resolver's
    /// `0.0.0.0`, `::`, multicast, broadcast, port 0) counts as no answer: the next primary
    /// source is asked; usable addresses beside them are kept.
    #[test]
    fn an_answer_of_only_unusable_addresses_falls_through() {
        let l = Duration::from_secs(2);
        let chain = [SourceSpec::primary(l), SourceSpec::primary(l)];
        let at = |ip: IpAddr, port: Option<u16>| ResolvedAddr {
            ip,
            port,
            source: AddrSource::NewDns,
        };
        let mut w = ChainWalk::new(vec!["a".into(), "b".into()]);
        assert_eq!(w.next_call(&chain), Some(("a".into(), 0)));
        w.answer(vec![
            at(IpAddr::V4(Ipv4Addr::UNSPECIFIED), None),
            at("::".parse().unwrap(), None),
            at(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)), None),
            at(IpAddr::V4(Ipv4Addr::BROADCAST), None),
            at(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), Some(0)),
        ]);
        assert_eq!(
            w.next_call(&chain),
            Some(("a".into(), 1)),
            "system DNS asked"
        );
        w.answer(vec![addr(1, AddrSource::SystemDns)]);
        assert_eq!(w.next_call(&chain), Some(("b".into(), 0)));
        w.answer(vec![
            at(IpAddr::V4(Ipv4Addr::UNSPECIFIED), None),
            addr(2, AddrSource::NewDns),
        ]);
        assert_eq!(w.next_call(&chain), None);
        let a = w.answers();
        assert_eq!(a.hosts[0], vec![addr(1, AddrSource::SystemDns)]);
        assert_eq!(a.hosts[1], vec![addr(2, AddrSource::NewDns)]);
    }

    #[test]
    fn primary_sources_fall_through_until_one_answers_and_backups_are_always_asked() {
        let l = Duration::from_secs(2);
        let chain = [
            SourceSpec::primary(l),
            SourceSpec::primary(l),
            SourceSpec::backup(l),
        ];
        let mut w = ChainWalk::new(vec!["a".into(), "b".into()]);
        assert_eq!(w.next_call(&chain), Some(("a".into(), 0)));
        w.answer(vec![]); // app DNS knows nothing (or timed out)
        assert_eq!(w.next_call(&chain), Some(("a".into(), 1)));
        assert!(w.is_current("a", 1));
        w.answer(vec![addr(1, AddrSource::SystemDns)]);
        assert_eq!(w.next_call(&chain), Some(("a".into(), 2)));
        w.answer(vec![addr(9, AddrSource::Backup)]);
        assert_eq!(w.next_call(&chain), Some(("b".into(), 0)));
        w.answer(vec![addr(2, AddrSource::NewDns)]);
        // Host b answered from source 0: source 1 (primary) is skipped.
        assert_eq!(w.next_call(&chain), Some(("b".into(), 2)));
        w.answer(vec![]);
        assert_eq!(w.next_call(&chain), None);
        let a = w.answers();
        assert_eq!(a.hosts[0], vec![addr(1, AddrSource::SystemDns)]);
        assert_eq!(a.hosts[1], vec![addr(2, AddrSource::NewDns)]);
        assert_eq!(a.backups, vec![addr(9, AddrSource::Backup)]);
    }

    #[test]
    fn a_debug_answer_is_used_alone() {
        let l = Duration::from_secs(2);
        let chain = [SourceSpec::primary(l), SourceSpec::backup(l)];
        let mut w = ChainWalk::new(vec!["a".into(), "b".into()]);
        w.next_call(&chain);
        w.answer(vec![addr(7, AddrSource::Debug)]);
        assert_eq!(w.next_call(&chain), None);
        assert_eq!(w.answers().debug, vec![addr(7, AddrSource::Debug)]);
    }
}

//! IP ranking, bans and their persistence (spec §11), and the address plan built on them
//! (§10.3, §10.6).
//!
//! # Internal API (shared by the long link and the short link)
//!
//! - [`Ranking::record`] feeds one outcome of an address (a connect result, a link failure,
//!   a task success); [`Ranking::is_banned`] and [`Ranking::rtt`] read it back.
//! - [`Ranking::plan`] turns the answers of the IP source chain ([`Answers`]) into the
//!   ordered candidate list of one connect cycle, for either [`ConnectProfile`]. A short-link
//!   attempt calls it with its single port and its own room.
//! - [`Ranking::set_network`] switches the network label and lifts every ban (§11.6).
//! - [`Ranking::state`] / [`Ranking::restore`] convert to and from the persisted
//!   [`RankingState`].
//!
//! # The rules
//!
//! Each IP:port keeps Mars's 8-bit register of recent outcomes (1 = failure, newest in bit
//! 0), a 64-bit long history, success/failure counters, the last connect RTT and the
//! instants of the last recorded failure and success. A success is recorded at most once per
//! 10 s per address and a failure likewise (Mars's rate limit); an RTT is always kept.
//!
//! **Ban** (§11.2): at least 3 failures among the last 8 recorded outcomes and the last
//! failure less than the ban time ago: 6 min, plus 6 min for each trailing consecutive
//! failure beyond 3, at most 30 min. Banned addresses leave the primary (DNS) part of a plan;
//! backups are never filtered. When that leaves nothing at all, Phobos tries the banned
//! addresses anyway (ban ending soonest first) instead of failing the cycle; Mars fails. A network change lifts every ban (the registers stay, so a
//! flaky address still ranks low); a restored record has no failure instant, so it is never
//! banned before a new failure (§11.4).
//!
//! **Phobos order**: sort by (failures among the last 8, last failure oldest first — never
//! failed first, a known success before none, last RTT lowest first), ties broken by a
//! random key from the engine's seeded generator (so equally good addresses share the load,
//! and runs replay); addresses of one IP are then spread apart (de-cluster, §11.3 step 3)
//! and IPv6/IPv4 interleaved starting with the family of the best address (RFC 8305 §4,
//! first address family count 1).
//!
//! **Mars order** (`MarsClassic`): §11.3 exactly: filter bans, shuffle, de-cluster, split
//! into history and new, sort history, then the IPv6-aware weighted merge.
//!
//! **Age and bounds** (§11.4): each network and each address remembers its last use (an
//! instant of this run, or the wall-clock seconds it was saved with); what was unused for a
//! day is left out of [`Ranking::state`] and dropped by [`Ranking::restore`]. At most
//! [`MAX_NETWORKS`] networks and [`MAX_ADDRS_PER_NETWORK`] addresses per network are kept;
//! a new one takes the place of the least recently used. Mars dates a network's record at
//! its creation and never refreshes it, and sets no bound.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use phobos_plugin_api::{AddrSource, IpPort, ResolvedAddr};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::ConnectProfile;

/// One address of a plan, with where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Where to connect.
    pub(crate) addr: IpPort,
    /// The source that named it.
    pub(crate) source: AddrSource,
}

/// What the IP source chain found for one connect cycle.
#[derive(Clone, Debug, Default)]
pub(crate) struct Answers {
    /// Primary (DNS-like) addresses per host, in host order; a host without an answer has an
    /// empty list.
    pub(crate) hosts: Vec<Vec<ResolvedAddr>>,
    /// Backup addresses, every host's, in order.
    pub(crate) backups: Vec<ResolvedAddr>,
    /// A debug list: used alone, in order, when non-empty.
    pub(crate) debug: Vec<ResolvedAddr>,
}

/// The inputs of [`Ranking::plan`] besides the answers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlanRules<'a> {
    /// How to order.
    pub(crate) profile: ConnectProfile,
    /// Ports for addresses that carry none (long link: every configured port, §10.6; short
    /// link: its one port).
    pub(crate) ports: &'a [u16],
    /// Mars's `kNumMakeCount` (5).
    pub(crate) room: usize,
    /// Whether the app is active (§10.3 spreads fewer primary items when inactive).
    pub(crate) active: bool,
}

/// Per-address records of every network seen, and the current network's label.
#[derive(Debug)]
pub(crate) struct Ranking {
    label: String,
    /// At most [`MAX_NETWORKS`], each with at most [`MAX_ADDRS_PER_NETWORK`] records.
    nets: BTreeMap<String, Network>,
    /// Server bans (Mars's `AddServerBan`): every port of the IP, until the instant.
    server_bans: BTreeMap<IpAddr, Instant>,
    /// An address and the end of the rate-limited period after its `last_success` on the
    /// current network, as last seen by [`record`](Self::record).
    ///
    /// Design: a busy link reports a success per task, and all but one per 10 s are
    /// rate-limited away; this lets those return before the two map lookups, with one
    /// comparison of instants.
    recent_success: Option<(IpPort, Instant)>,
}

/// One network's records and when it was last in use.
#[derive(Debug, Default)]
struct Network {
    records: BTreeMap<IpPort, Record>,
    /// Last current (left by a network change, or a record written while current).
    used: LastUse,
}

/// When a network or an address was last in use: in this run (an instant of the engine's
/// clock) or, for what was restored and not used since, in the saved state (wall-clock
/// seconds).
///
/// Design: the core reads no clock, and a monotonic instant cannot be placed before the
/// process started (nor does it count a device's sleep), so a restored age stays in
/// wall-clock seconds until the thing is used again. The derived order is "least recently
/// used first": any use in this run (`Some` instant) is newer than any saved one, and
/// saved uses in the same second keep their order in the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct LastUse {
    run: Option<Instant>,
    saved_unix: Option<u64>,
    /// Position in the saved list (networks are saved least recently used first).
    saved_order: usize,
}

/// What the core remembers about one IP:port on one network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Record {
    /// Recent recorded outcomes, newest in bit 0; 1 = failure.
    recent: u8,
    /// The long history (64 outcomes), persisted.
    history: u64,
    successes: u32,
    failures: u32,
    rtt: Option<Duration>,
    last_fail: Option<Instant>,
    last_success: Option<Instant>,
    /// The last outcome or RTT seen (to within the 10 s rate limit), or the saved age.
    used: LastUse,
}

impl Ranking {
    /// Empty records on the network `label`.
    pub(crate) fn new(label: &str) -> Self {
        Ranking {
            label: label.to_owned(),
            nets: BTreeMap::new(),
            server_bans: BTreeMap::new(),
            recent_success: None,
        }
    }

    /// The network changed at `now`: later records go to `label`, and every ban is lifted
    /// (§11.6). The network left was in use until `now`.
    pub(crate) fn set_network(&mut self, now: Instant, label: &str) {
        if let Some(left) = self.nets.get_mut(&self.label) {
            left.used.run = Some(now);
        }
        self.label = label.to_owned();
        self.recent_success = None;
        self.clear_bans();
    }

    /// Lifts every ban, of addresses and of servers; the records stay (Mars's `ClearCache`,
    /// §11.6, which a network change and `RedoTasks` run).
    pub(crate) fn clear_bans(&mut self) {
        self.server_bans.clear();
        for net in self.nets.values_mut() {
            for r in net.records.values_mut() {
                r.last_fail = None;
            }
        }
    }

    /// Records one outcome of `addr`. `rtt`: the connect time of a successful connect.
    /// Rate-limited like Mars: one success and one failure per 10 s per address.
    pub(crate) fn record(
        &mut self,
        now: Instant,
        addr: IpPort,
        success: bool,
        rtt: Option<Duration>,
    ) {
        if let Some((a, until)) = self.recent_success {
            // `until` is the last success plus the rate limit: one comparison.
            if success && rtt.is_none() && a == addr && now <= until {
                return;
            }
        }
        if !self.nets.contains_key(&self.label) {
            // A new network takes the place of the least recently used one.
            keep_most_recent(&mut self.nets, MAX_NETWORKS - 1, |_, n| n.used);
            self.nets.insert(self.label.clone(), Network::default());
        }
        let Some(net) = self.nets.get_mut(&self.label) else {
            return;
        };
        net.used.run = Some(now);
        if net.records.len() >= MAX_ADDRS_PER_NETWORK && !net.records.contains_key(&addr) {
            // A new address takes the place of the least recently used one (which may be
            // the fast path's).
            keep_most_recent(&mut net.records, MAX_ADDRS_PER_NETWORK - 1, |_, r| r.used);
            self.recent_success = None;
        }
        let r = net.records.entry(addr).or_default();
        r.used.run = Some(now);
        if let Some(rtt) = rtt {
            r.rtt = Some(rtt);
        }
        let last = if success { r.last_success } else { r.last_fail };
        if success {
            // After this call `last_success` is `last` (rate-limited) or `now`.
            let kept = match last {
                Some(t) if now.saturating_duration_since(t) <= RECORD_RATE_LIMIT => t,
                _ => now,
            };
            self.recent_success = kept
                .checked_add(RECORD_RATE_LIMIT)
                .map(|until| (addr, until));
        }
        if last.is_some_and(|t| now.saturating_duration_since(t) <= RECORD_RATE_LIMIT) {
            return;
        }
        let bit = u8::from(!success);
        r.recent = (r.recent << 1) | bit;
        r.history = (r.history << 1) | u64::from(bit);
        if success {
            r.successes = r.successes.saturating_add(1);
            r.last_success = Some(now);
        } else {
            r.failures = r.failures.saturating_add(1);
            r.last_fail = Some(now);
        }
    }

    /// The record of `addr` on the current network.
    pub(crate) fn get(&self, addr: &IpPort) -> Option<&Record> {
        self.nets.get(&self.label)?.records.get(addr)
    }

    /// Whether `addr` is banned at `now` (§11.2): by its own failures or by a server ban.
    pub(crate) fn is_banned(&self, now: Instant, addr: &IpPort) -> bool {
        self.server_bans
            .get(&addr.ip)
            .is_some_and(|&until| now < until)
            || self.get(addr).is_some_and(|r| r.is_banned(now))
    }

    /// The server asked to avoid `ip` (every port) for [`SERVER_BAN`] (Mars's
    /// `AddServerBan`, 30 min). Lifted by a network change.
    pub(crate) fn ban_server(&mut self, now: Instant, ip: IpAddr) {
        self.server_bans.retain(|_, until| *until > now);
        self.server_bans.insert(ip, now + SERVER_BAN);
    }

    /// When the ban of `addr` ends, if it is banned at `now`.
    #[cfg(test)]
    pub(crate) fn ban_ends(&self, now: Instant, addr: &IpPort) -> Option<Instant> {
        self.ban_end(now, addr)
    }

    /// The last connect RTT measured for `addr` on this network.
    pub(crate) fn rtt(&self, addr: &IpPort) -> Option<Duration> {
        self.get(addr)?.rtt
    }

    /// The ordered candidates of one connect cycle.
    pub(crate) fn plan(
        &self,
        answers: &Answers,
        rules: PlanRules<'_>,
        now: Instant,
        rng: &mut ChaCha8Rng,
    ) -> Vec<Candidate> {
        if !answers.debug.is_empty() {
            let mut out = expand(&answers.debug, rules.ports);
            out.truncate(rules.room);
            return out;
        }
        let room = rules.room;
        let producing: Vec<usize> = (0..answers.hosts.len())
            .filter(|&h| !answers.hosts[h].is_empty())
            .collect();
        // §10.3: inactive apps spread room − 1 primary items over the hosts, leaving room
        // for backups; active apps fill host by host.
        let primary_room = if rules.active {
            room
        } else {
            room.saturating_sub(1).max(1)
        };
        let mut out: Vec<Candidate> = Vec::new();
        let mut carry = 0;
        for (i, &h) in producing.iter().enumerate() {
            let left = primary_room.saturating_sub(out.len());
            if left == 0 {
                break;
            }
            let quota = if rules.active {
                left
            } else {
                let n = producing.len();
                let base = primary_room / n + usize::from(i < primary_room % n);
                (base + carry).min(left)
            };
            let items: Vec<Candidate> = expand(&answers.hosts[h], rules.ports)
                .into_iter()
                .filter(|c| !self.is_banned(now, &c.addr))
                .filter(|c| !out.iter().any(|o| o.addr == c.addr))
                .collect();
            let mut ranked = match rules.profile {
                ConnectProfile::MarsClassic => self.mars_order(items, rng),
                _ => self.phobos_order(items, rng),
            };
            carry = quota.saturating_sub(ranked.len());
            ranked.truncate(quota);
            out.extend(ranked);
        }
        if !matches!(rules.profile, ConnectProfile::MarsClassic) {
            out = interleave_families(out);
        }
        // §10.3: one host filling the room still leaves one place for a backup.
        let limit = if rules.active && producing.len() == 1 && out.len() >= room {
            room + 1
        } else {
            room
        };
        let backups: Vec<Candidate> = expand(&answers.backups, rules.ports)
            .into_iter()
            .filter(|c| !out.iter().any(|o| o.addr == c.addr))
            .collect();
        let backups = match rules.profile {
            ConnectProfile::MarsClassic => {
                let mut b = backups;
                b.shuffle(rng);
                b
            }
            _ => self.phobos_order(backups, rng),
        };
        for b in backups {
            if out.len() >= limit {
                break;
            }
            out.push(b);
        }
        if out.is_empty() && !matches!(rules.profile, ConnectProfile::MarsClassic) {
            out = self.last_resort(answers, rules, now);
        }
        out
    }

    /// Phobos: when bans leave nothing to try (and there is no backup), the banned primary
    /// addresses are tried anyway, the ban ending soonest first, rather than failing the
    /// cycle with no address for up to 30 min after a short outage (Mars does fail).
    fn last_resort(&self, answers: &Answers, rules: PlanRules<'_>, now: Instant) -> Vec<Candidate> {
        let mut all: Vec<Candidate> = Vec::new();
        for host in &answers.hosts {
            for c in expand(host, rules.ports) {
                if !all.iter().any(|o| o.addr == c.addr) {
                    all.push(c);
                }
            }
        }
        all.sort_by_key(|c| self.ban_end(now, &c.addr));
        all.truncate(rules.room);
        all
    }

    /// When the ban of `addr` ends (`None` when not banned at `now`).
    fn ban_end(&self, now: Instant, addr: &IpPort) -> Option<Instant> {
        let server = self
            .server_bans
            .get(&addr.ip)
            .copied()
            .filter(|&until| now < until);
        let own = self
            .get(addr)
            .filter(|r| r.is_banned(now))
            .and_then(|r| r.last_fail.map(|t| t + r.ban_time()));
        server.max(own)
    }

    /// Phobos order: by record, random among equals, IPs spread apart.
    fn phobos_order(&self, items: Vec<Candidate>, rng: &mut ChaCha8Rng) -> Vec<Candidate> {
        let mut keyed: Vec<(RankKey, u64, Candidate)> = items
            .into_iter()
            .map(|c| (self.rank_key(&c.addr), rng.gen::<u64>(), c))
            .collect();
        keyed.sort_by_key(|k| (k.0, k.1));
        decluster(keyed.into_iter().map(|k| k.2).collect())
    }

    fn rank_key(&self, addr: &IpPort) -> RankKey {
        match self.get(addr) {
            None => RankKey {
                failures: 0,
                last_fail: None,
                no_success: true,
                rtt: Duration::MAX,
            },
            Some(r) => RankKey {
                failures: r.recent.count_ones(),
                last_fail: r.last_fail,
                no_success: r.last_success.is_none() && r.successes == 0,
                rtt: r.rtt.unwrap_or(Duration::MAX),
            },
        }
    }

    /// Mars's §11.3 order.
    fn mars_order(&self, mut items: Vec<Candidate>, rng: &mut ChaCha8Rng) -> Vec<Candidate> {
        items.shuffle(rng);
        let items = decluster(items);
        let (mut history, new): (Vec<Candidate>, Vec<Candidate>) =
            items.into_iter().partition(|c| self.get(&c.addr).is_some());
        history.sort_by(|a, b| {
            let (ra, rb) = (self.get(&a.addr), self.get(&b.addr));
            let key = |r: Option<&Record>| {
                let r = r.cloned().unwrap_or_default();
                (
                    r.recent.count_ones(),
                    r.last_fail,
                    std::cmp::Reverse(r.last_success),
                )
            };
            key(ra).cmp(&key(rb))
        });
        // History re-ordered v6, v4, v6, … with leftovers appended.
        let (h6, h4): (Vec<Candidate>, Vec<Candidate>) =
            history.into_iter().partition(|c| c.addr.is_ipv6());
        let mut hist = interleave(h6, h4, true);
        hist.reverse();
        let (mut n6, mut n4): (Vec<Candidate>, Vec<Candidate>) =
            new.into_iter().partition(|c| c.addr.is_ipv6());
        n6.reverse();
        n4.reverse();
        let mut out = Vec::new();
        let mut v6_turn = true;
        while !(hist.is_empty() && n6.is_empty() && n4.is_empty()) {
            let new_fam = if v6_turn { &mut n6 } else { &mut n4 };
            let hist_front_matches = hist.last().is_some_and(|c| c.addr.is_ipv6() == v6_turn);
            if hist_front_matches {
                let (h, n) = (hist.len(), new_fam.len());
                let take_hist = n == 0 || rng.gen_range(0..h + n) < h;
                let c = if take_hist { hist.pop() } else { new_fam.pop() };
                out.extend(c);
            } else if let Some(c) = new_fam.pop() {
                out.push(c);
            }
            v6_turn = !v6_turn;
        }
        out
    }

    /// The persisted form of every network's records at `now` (`now_unix` seconds since the
    /// Unix epoch by the wall clock): each network and address with its last use, those
    /// unused for [`RECORD_MAX_AGE_SECS`] left out (§11.4).
    pub(crate) fn state(&self, now: Instant, now_unix: u64) -> RankingState {
        let unix = |u: LastUse| u.unix(now, now_unix).unwrap_or(now_unix);
        // Least recently used first, the current network last: a restore tells networks
        // used in the same second apart by their order.
        let mut by_use: Vec<(&String, &Network)> = self.nets.iter().collect();
        by_use.sort_by_key(|&(label, net)| (*label == self.label, net.used));
        let networks = by_use
            .into_iter()
            .filter_map(|(label, net)| {
                let net_used = if *label == self.label {
                    now_unix
                } else {
                    unix(net.used)
                };
                if is_too_old(net_used, now_unix) {
                    return None;
                }
                let addrs: Vec<AddrRecord> = net
                    .records
                    .iter()
                    .map(|(addr, r)| (addr, r, unix(r.used)))
                    .filter(|&(_, _, used)| !is_too_old(used, now_unix))
                    .map(|(addr, r, used)| AddrRecord {
                        addr: *addr,
                        history: r.history,
                        successes: r.successes,
                        failures: r.failures,
                        rtt_ms: r
                            .rtt
                            .map(|d| d.as_millis().min(u128::from(u32::MAX)) as u32),
                        last_used_unix: Some(used),
                    })
                    .collect();
                (!addrs.is_empty()).then(|| NetworkRecords {
                    label: label.clone(),
                    last_used_unix: Some(net_used),
                    addrs,
                })
            })
            .collect();
        RankingState {
            version: RankingState::VERSION,
            saved_at_unix: Some(now_unix),
            networks,
        }
    }

    /// Replaces every record with `state`'s, as of `now_unix` (wall-clock seconds since the
    /// Unix epoch). Records unused for [`RECORD_MAX_AGE_SECS`] or used in the future are
    /// dropped; of the rest, the most recently used [`MAX_NETWORKS`] networks (the current
    /// one first) and [`MAX_ADDRS_PER_NETWORK`] addresses per network are kept. A file
    /// written before records had ages dates them by its save time.
    ///
    /// Restored records are not banned until a new failure; the 8-bit register is folded
    /// from the 64-bit history, one bit per byte ("any failure in that byte", §11.4).
    pub(crate) fn restore(&mut self, state: &RankingState, now_unix: u64) {
        self.recent_success = None;
        self.nets.clear();
        let file_time = state.saved_at_unix.unwrap_or(now_unix);
        for (order, net) in state.networks.iter().enumerate() {
            let net_used = net.last_used_unix.unwrap_or(file_time);
            if is_too_old(net_used, now_unix) {
                continue;
            }
            let entry = self.nets.entry(net.label.clone()).or_default();
            let saved = LastUse {
                saved_order: order,
                ..LastUse::saved(net_used)
            };
            entry.used = entry.used.max(saved);
            for a in &net.addrs {
                let used = a.last_used_unix.unwrap_or(net_used);
                if is_too_old(used, now_unix) {
                    continue;
                }
                let mut recent = 0u8;
                for byte in 0..8 {
                    if (a.history >> (byte * 8)) & 0xFF != 0 {
                        recent |= 1 << byte;
                    }
                }
                entry.records.insert(
                    a.addr,
                    Record {
                        recent,
                        history: a.history,
                        successes: a.successes,
                        failures: a.failures,
                        rtt: a.rtt_ms.map(|ms| Duration::from_millis(u64::from(ms))),
                        last_fail: None,
                        last_success: None,
                        used: LastUse::saved(used),
                    },
                );
            }
        }
        self.nets.retain(|_, net| !net.records.is_empty());
        for net in self.nets.values_mut() {
            keep_most_recent(&mut net.records, MAX_ADDRS_PER_NETWORK, |_, r| r.used);
        }
        // The current network is kept first, whatever its age.
        let current = &self.label;
        keep_most_recent(&mut self.nets, MAX_NETWORKS, |label, n| {
            (label == current, n.used)
        });
    }
}

impl LastUse {
    fn saved(unix: u64) -> Self {
        LastUse {
            run: None,
            saved_unix: Some(unix),
            saved_order: 0,
        }
    }

    /// Wall-clock seconds of the last use, given the engine's `now` and the wall clock's
    /// `now_unix`; `None` when never used.
    fn unix(self, now: Instant, now_unix: u64) -> Option<u64> {
        match self.run {
            Some(t) => Some(now_unix.saturating_sub(now.saturating_duration_since(t).as_secs())),
            None => self.saved_unix,
        }
    }
}

impl Record {
    fn trailing_failures(&self) -> u32 {
        self.recent.trailing_ones()
    }

    /// §11.2: 6 min, plus 6 min per trailing consecutive failure beyond 3, at most 30 min.
    fn ban_time(&self) -> Duration {
        let extra = self.trailing_failures().saturating_sub(3).min(4);
        BAN_STEP * (1 + extra)
    }

    fn is_banned(&self, now: Instant) -> bool {
        self.recent.count_ones() >= BAN_FAILURES
            && self
                .last_fail
                .is_some_and(|t| now.saturating_duration_since(t) < self.ban_time())
    }
}

/// The persisted IP ranking: every network's per-address history. Versioned; a driver
/// stores it with [`to_json`](Self::to_json) and reads it back with
/// [`from_json`](Self::from_json), which refuses another version.
///
/// ```
/// use phobos_stn_proto::RankingState;
///
/// let state = RankingState::default();
/// let text = state.to_json();
/// assert_eq!(RankingState::from_json(&text).unwrap(), state);
/// assert!(RankingState::from_json("{").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankingState {
    /// The format version ([`RankingState::VERSION`]).
    pub version: u32,
    /// When it was saved (seconds since the Unix epoch, by the wall-clock time the driver
    /// gave [`Engine::ranking_state`](crate::Engine::ranking_state)). A state saved a day
    /// or more ago is ignored whole (§11.4); records without their own
    /// [`last_used_unix`](AddrRecord::last_used_unix) (files of earlier builds) count as
    /// used at this time.
    pub saved_at_unix: Option<u64>,
    /// Records per network label.
    pub networks: Vec<NetworkRecords>,
}

/// The records of one network (Mars's `<record netinfo="LABEL">`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecords {
    /// The network label given to [`Engine::set_network`](crate::Engine::set_network).
    pub label: String,
    /// When the network was last in use (seconds since the Unix epoch); the network is
    /// dropped a day later. Missing in files of earlier builds: the state's
    /// [`saved_at_unix`](RankingState::saved_at_unix) stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_unix: Option<u64>,
    /// One entry per IP:port.
    pub addrs: Vec<AddrRecord>,
}

/// The persisted record of one IP:port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrRecord {
    /// The address.
    pub addr: IpPort,
    /// The last 64 recorded outcomes, newest in bit 0; 1 = failure.
    pub history: u64,
    /// Recorded successes.
    pub successes: u32,
    /// Recorded failures.
    pub failures: u32,
    /// The last connect time, in milliseconds.
    pub rtt_ms: Option<u32>,
    /// When the address last had an outcome recorded (seconds since the Unix epoch, to
    /// within the 10 s rate limit); the record is dropped a day later. Missing in files of
    /// earlier builds: the network's [`last_used_unix`](NetworkRecords::last_used_unix)
    /// stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_unix: Option<u64>,
}

/// Why a persisted [`RankingState`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RankingStateError {
    /// Not a ranking state (not JSON, or the wrong shape).
    #[error("malformed ranking state: {0}")]
    Malformed(String),
    /// Written by another format version.
    #[error("ranking state version {found}, expected {expected}")]
    Version {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
}

impl RankingState {
    /// The format version this build writes and reads.
    pub const VERSION: u32 = 1;

    /// The state as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of numbers and strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a state written by [`to_json`](Self::to_json).
    ///
    /// # Errors
    ///
    /// [`RankingStateError::Version`] for another format version, else
    /// [`RankingStateError::Malformed`] when the text is not a ranking state.
    pub fn from_json(text: &str) -> Result<Self, RankingStateError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned =
            serde_json::from_str(text).map_err(|e| RankingStateError::Malformed(e.to_string()))?;
        if v.version != Self::VERSION {
            return Err(RankingStateError::Version {
                found: v.version,
                expected: Self::VERSION,
            });
        }
        serde_json::from_str(text).map_err(|e| RankingStateError::Malformed(e.to_string()))
    }

    /// Whether the state is too old to use at `now_unix` (saved a day or more ago, or in the
    /// future; §11.4). A state without a save time is never expired.
    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.saved_at_unix.is_some_and(|t| is_too_old(t, now_unix))
    }
}

impl Default for RankingState {
    fn default() -> Self {
        RankingState {
            version: Self::VERSION,
            saved_at_unix: None,
            networks: Vec::new(),
        }
    }
}

/// Keeps the `keep` entries of `map` with the greatest `recency` (ties: the lower keys),
/// dropping the others.
fn keep_most_recent<K: Ord + Clone, V, R: Ord>(
    map: &mut BTreeMap<K, V>,
    keep: usize,
    recency: impl Fn(&K, &V) -> R,
) {
    if map.len() <= keep {
        return;
    }
    let mut keys: Vec<(R, K)> = map
        .iter()
        .map(|(k, v)| (recency(k, v), k.clone()))
        .collect();
    // Stable, so equals stay in key order.
    keys.sort_by(|a, b| b.0.cmp(&a.0));
    for (_, k) in keys.into_iter().skip(keep) {
        map.remove(&k);
    }
}

/// Whether a last use at `used_unix` is too old to keep at `now_unix`: a day or more ago,
/// or in the future (the wall clock was set back; Mars drops those too, §11.4).
fn is_too_old(used_unix: u64, now_unix: u64) -> bool {
    used_unix > now_unix || now_unix - used_unix >= RECORD_MAX_AGE_SECS
}

/// Sort key of the Phobos order (lower is better).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RankKey {
    failures: u32,
    last_fail: Option<Instant>,
    no_success: bool,
    rtt: Duration,
}

/// Each address with its own port, or with every port (§10.6); duplicates dropped.
///
/// Addresses no connection can reach (see [`dialable`]) are left out, and repeats are found
/// with a set: an IP source may answer thousands of addresses (a linear scan per address
/// took 2.4 s of driver time for 20,000 in a debug build).
fn expand(list: &[ResolvedAddr], ports: &[u16]) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let mut seen: HashSet<IpPort> = HashSet::new();
    for r in list {
        let ports: &[u16] = match &r.port {
            Some(p) => std::slice::from_ref(p),
            None => ports,
        };
        for &port in ports {
            let addr = IpPort::new(r.ip, port);
            if dialable(&addr) && seen.insert(addr) {
                out.push(Candidate {
                    addr,
                    source: r.source,
                });
            }
        }
    }
    out
}

/// Whether a TCP connection to `addr` can reach a server: not port 0, not an unspecified
/// (`0.0.0.0`, `::`, which Linux takes as this host), multicast or IPv4 broadcast address.
/// An address given that way in a port list with 0 is ignored rather than dialled; a link's
/// fixed list with one is refused by `Config::validate`; IP sources' answers were already
/// filtered (`is_dialable`).
pub(crate) fn dialable(addr: &IpPort) -> bool {
    addr.port != 0 && dialable_ip(addr.ip)
}

/// Whether `ip` is one a connection can be made to: not unspecified, multicast or the IPv4
/// broadcast address, in IPv4-mapped IPv6 form (`::ffff:0.0.0.0`) too.
pub(crate) fn dialable_ip(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    !ip.is_unspecified() && !ip.is_multicast() && ip != IpAddr::V4(std::net::Ipv4Addr::BROADCAST)
}

/// §11.3 step 3: where an item repeats the previous item's IP, swap in the next later item
/// with another IP (stop if there is none).
fn decluster(mut items: Vec<Candidate>) -> Vec<Candidate> {
    for i in 1..items.len() {
        if items[i].addr.ip != items[i - 1].addr.ip {
            continue;
        }
        let prev = items[i - 1].addr.ip;
        match (i + 1..items.len()).find(|&j| items[j].addr.ip != prev) {
            Some(j) => items.swap(i, j),
            None => break,
        }
    }
    items
}

/// RFC 8305 §4 with a first address family count of 1: alternate families, starting with
/// the family of the first item, each family keeping its order.
fn interleave_families(items: Vec<Candidate>) -> Vec<Candidate> {
    let Some(first) = items.first() else {
        return items;
    };
    let v6_first = first.addr.is_ipv6();
    let (v6, v4): (Vec<Candidate>, Vec<Candidate>) =
        items.into_iter().partition(|c| c.addr.is_ipv6());
    interleave(v6, v4, v6_first)
}

/// Alternates `v6` and `v4` starting with `v6` when `v6_first`; leftovers appended.
fn interleave(v6: Vec<Candidate>, v4: Vec<Candidate>, v6_first: bool) -> Vec<Candidate> {
    let (a, b) = if v6_first { (v6, v4) } else { (v4, v6) };
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    loop {
        let x = a.next();
        let y = b.next();
        if x.is_none() && y.is_none() {
            return out;
        }
        out.extend(x);
        out.extend(y);
    }
}

/// A success (or a failure) is recorded at most once per this interval per address.
const RECORD_RATE_LIMIT: Duration = Duration::from_millis(10_000);
/// Failures among the last 8 recorded outcomes that ban an address.
const BAN_FAILURES: u32 = 3;
/// How long a server ban lasts (Mars: 30 min).
pub(crate) const SERVER_BAN: Duration = Duration::from_secs(30 * 60);
/// Ban time step (6 min).
const BAN_STEP: Duration = Duration::from_secs(6 * 60);
/// Persisted records unused for this long are dropped (Mars: 86 400 s after creation).
const RECORD_MAX_AGE_SECS: u64 = 86_400;
/// Networks whose records are kept, least recently used dropped first (Mars: no limit).
pub(crate) const MAX_NETWORKS: usize = 16;
/// Addresses kept per network, least recently used dropped first (Mars: no limit).
pub(crate) const MAX_ADDRS_PER_NETWORK: usize = 64;

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use rand::SeedableRng;

    use super::*;

    fn v4(last: u8, port: u16) -> IpPort {
        IpPort::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port)
    }

    fn v6(last: u16, port: u16) -> IpPort {
        IpPort::new(
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last)),
            port,
        )
    }

    fn dns(addrs: &[IpPort]) -> Vec<ResolvedAddr> {
        addrs
            .iter()
            .map(|a| ResolvedAddr {
                ip: a.ip,
                port: Some(a.port),
                source: AddrSource::NewDns,
            })
            .collect()
    }

    fn rules(profile: ConnectProfile) -> PlanRules<'static> {
        PlanRules {
            profile,
            ports: &[],
            room: 5,
            active: true,
        }
    }

    fn addrs(plan: &[Candidate]) -> Vec<IpPort> {
        plan.iter().map(|c| c.addr).collect()
    }

    /// A wall-clock time for the tests (seconds since the Unix epoch).
    const UNIX_T0: u64 = 1_700_000_000;
    const HOUR: u64 = 3_600;

    /// The labels and addresses of a state, for comparisons.
    fn contents(state: &RankingState) -> Vec<(String, Vec<IpPort>)> {
        state
            .networks
            .iter()
            .map(|n| (n.label.clone(), n.addrs.iter().map(|a| a.addr).collect()))
            .collect()
    }

    #[test]
    fn addresses_no_connection_can_reach_are_not_planned() {
        let t0 = crate::tests::epoch::epoch();
        let r = Ranking::new("n");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let junk = [
            IpPort::new(ip("0.0.0.0"), 80),
            IpPort::new(ip("::"), 80),
            IpPort::new(ip("255.255.255.255"), 80),
            IpPort::new(ip("224.0.0.1"), 80),
            IpPort::new(ip("ff02::1"), 80),
            v4(7, 0),
        ];
        let mut answer = junk.to_vec();
        answer.push(v4(1, 80));
        let answers = Answers {
            hosts: vec![dns(&answer)],
            backups: vec![],
            debug: vec![],
        };
        for profile in [ConnectProfile::Phobos, ConnectProfile::MarsClassic] {
            let plan = r.plan(
                &answers,
                rules(profile),
                t0,
                &mut ChaCha8Rng::seed_from_u64(1),
            );
            assert_eq!(addrs(&plan), [v4(1, 80)], "{profile:?}");
        }
    }

    #[test]
    fn thousands_of_answered_addresses_plan_each_once() {
        let t0 = crate::tests::epoch::epoch();
        let r = Ranking::new("n");
        let many: Vec<IpPort> = (0..20_000u32)
            .map(|i| IpPort::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i % 10_000)), 80))
            .collect();
        let list = dns(&many);
        let expanded = expand(&list, &[]);
        assert_eq!(expanded.len(), 10_000);
        let answers = Answers {
            hosts: vec![list],
            backups: vec![],
            debug: vec![],
        };
        let plan = r.plan(
            &answers,
            rules(ConnectProfile::Phobos),
            t0,
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        assert_eq!(plan.len(), 5);
    }

    #[test]
    fn three_failures_ban_for_six_minutes_and_longer_runs_for_longer() {
        let t0 = crate::tests::epoch::epoch();
        let mut r = Ranking::new("wifi");
        let a = v4(1, 80);
        let s = Duration::from_secs;
        r.record(t0, a, false, None);
        r.record(t0 + s(11), a, false, None);
        assert!(!r.is_banned(t0 + s(11), &a));
        // Within the rate limit: not recorded.
        r.record(t0 + s(15), a, false, None);
        assert!(!r.is_banned(t0 + s(15), &a));
        r.record(t0 + s(22), a, false, None);
        assert!(r.is_banned(t0 + s(22), &a));
        assert_eq!(r.ban_ends(t0 + s(22), &a), Some(t0 + s(22 + 360)));
        assert!(!r.is_banned(t0 + s(22 + 360), &a), "the ban expires");
        // Two more consecutive failures: 5 trailing → 18 min.
        r.record(t0 + s(400), a, false, None);
        r.record(t0 + s(411), a, false, None);
        assert_eq!(r.ban_ends(t0 + s(411), &a), Some(t0 + s(411 + 18 * 60)));
        // Many more: capped at 30 min.
        for i in 0..6 {
            r.record(t0 + s(500 + 11 * i), a, false, None);
        }
        let last = t0 + s(500 + 55);
        assert_eq!(r.ban_ends(last, &a), Some(last + s(30 * 60)));
        // A network change lifts the ban.
        r.set_network(last, "mobile");
        r.set_network(last, "wifi");
        assert!(!r.is_banned(last, &a));
    }

    #[test]
    fn successes_are_recorded_once_per_ten_seconds_per_address_on_each_network() {
        let t0 = crate::tests::epoch::epoch();
        let mut r = Ranking::new("wifi");
        let (a, b) = (v4(1, 80), v4(2, 80));
        let ms = Duration::from_millis;
        // Every 1.5 s for a minute, on two addresses in turn and in bursts (the fast path
        // for a repeated address, the maps for the other).
        for i in 0..40u64 {
            let at = t0 + ms(1_500 * i);
            r.record(at, a, true, None);
            r.record(at, a, true, None);
            if i % 2 == 0 {
                r.record(at, b, true, None);
            }
        }
        // Recorded at 0, 10.5, 21, 31.5, 42, 52.5 s (a) and 0, 12, 24, 36, 48 s (b).
        assert_eq!(r.get(&a).map(|x| x.successes), Some(6));
        assert_eq!(r.get(&b).map(|x| x.successes), Some(5));
        // A connect success carries its rtt even inside the rate limit.
        let rtt = Some(ms(30));
        r.record(t0 + ms(58_600), a, true, rtt);
        assert_eq!(r.get(&a).and_then(|x| x.rtt), rtt);
        // Another network has its own records, from the first success on.
        r.set_network(t0 + ms(58_650), "mobile");
        r.record(t0 + ms(58_700), a, true, None);
        assert_eq!(r.get(&a).map(|x| x.successes), Some(1));
        r.set_network(t0 + ms(58_750), "wifi");
        r.record(t0 + ms(58_800), a, true, None);
        assert_eq!(r.get(&a).map(|x| x.successes), Some(6));
        r.record(t0 + ms(63_000), a, true, None);
        assert_eq!(r.get(&a).map(|x| x.successes), Some(7));
    }

    #[test]
    fn a_server_ban_covers_every_port_for_thirty_minutes_until_the_network_changes() {
        let t0 = crate::tests::epoch::epoch();
        let mut r = Ranking::new("n");
        r.ban_server(t0, v4(1, 0).ip);
        assert!(r.is_banned(t0, &v4(1, 80)));
        assert!(r.is_banned(t0, &v4(1, 443)));
        assert!(!r.is_banned(t0, &v4(2, 80)));
        let end = t0 + Duration::from_secs(30 * 60);
        assert_eq!(r.ban_ends(t0, &v4(1, 80)), Some(end));
        assert!(r.is_banned(end - Duration::from_millis(1), &v4(1, 80)));
        assert!(!r.is_banned(end, &v4(1, 80)));
        r.ban_server(t0, v4(1, 0).ip);
        r.set_network(t0, "m");
        assert!(!r.is_banned(t0, &v4(1, 80)));
    }

    #[test]
    fn banned_addresses_leave_the_plan_but_backups_stay() {
        let t0 = crate::tests::epoch::epoch();
        let mut r = Ranking::new("n");
        let bad = v4(1, 80);
        for i in 0..3 {
            r.record(t0 + Duration::from_secs(11 * i), bad, false, None);
        }
        let now = t0 + Duration::from_secs(30);
        let answers = Answers {
            hosts: vec![dns(&[bad, v4(2, 80)])],
            backups: vec![ResolvedAddr {
                ip: bad.ip,
                port: Some(81),
                source: AddrSource::Backup,
            }],
            debug: vec![],
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for p in [ConnectProfile::Phobos, ConnectProfile::MarsClassic] {
            let plan = r.plan(&answers, rules(p), now, &mut rng);
            assert_eq!(addrs(&plan), vec![v4(2, 80), v4(1, 81)], "{p:?}");
            assert_eq!(plan[1].source, AddrSource::Backup);
        }
    }

    #[test]
    fn phobos_ranks_by_failures_then_success_then_rtt() {
        let t0 = crate::tests::epoch::epoch();
        let mut r = Ranking::new("n");
        let (fast, slow, flaky, fresh) = (v4(1, 80), v4(2, 80), v4(3, 80), v4(4, 80));
        r.record(t0, fast, true, Some(Duration::from_millis(20)));
        r.record(t0, slow, true, Some(Duration::from_millis(200)));
        r.record(t0, flaky, true, Some(Duration::from_millis(5)));
        r.record(t0 + Duration::from_secs(1), flaky, false, None);
        let answers = Answers {
            hosts: vec![dns(&[flaky, fresh, slow, fast])],
            ..Answers::default()
        };
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let plan = r.plan(&answers, rules(ConnectProfile::Phobos), t0, &mut rng);
            assert_eq!(addrs(&plan), vec![fast, slow, fresh, flaky]);
        }
    }

    #[test]
    fn equals_are_spread_at_random_yet_replayable() {
        let t0 = crate::tests::epoch::epoch();
        let r = Ranking::new("n");
        let list: Vec<IpPort> = (1..=5).map(|i| v4(i, 80)).collect();
        let answers = Answers {
            hosts: vec![dns(&list)],
            ..Answers::default()
        };
        let plan_with = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            addrs(&r.plan(&answers, rules(ConnectProfile::Phobos), t0, &mut rng))
        };
        assert_eq!(plan_with(7), plan_with(7), "same seed, same order");
        let firsts: std::collections::BTreeSet<IpPort> = (0..50).map(|s| plan_with(s)[0]).collect();
        assert_eq!(firsts.len(), 5, "every equal address gets to go first");
    }

    #[test]
    fn phobos_interleaves_families_and_spreads_one_ip_apart() {
        let t0 = crate::tests::epoch::epoch();
        let mut r = Ranking::new("n");
        let good6 = v6(1, 80);
        r.record(t0, good6, true, Some(Duration::from_millis(10)));
        let answers = Answers {
            hosts: vec![vec![
                ResolvedAddr {
                    ip: good6.ip,
                    port: None,
                    source: AddrSource::SystemDns,
                },
                ResolvedAddr {
                    ip: v6(2, 0).ip,
                    port: None,
                    source: AddrSource::SystemDns,
                },
                ResolvedAddr {
                    ip: v4(1, 0).ip,
                    port: None,
                    source: AddrSource::SystemDns,
                },
            ]],
            ..Answers::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let rules = PlanRules {
            ports: &[80, 443],
            room: 6,
            ..rules(ConnectProfile::Phobos)
        };
        let plan = addrs(&r.plan(&answers, rules, t0, &mut rng));
        assert_eq!(plan.len(), 6);
        assert_eq!(plan[0], good6, "the best address first");
        let families: Vec<bool> = plan.iter().map(|a| a.is_ipv6()).collect();
        assert_eq!(
            families,
            vec![true, false, true, false, true, true],
            "families alternate while both last: {plan:?}"
        );
        let v6: Vec<IpAddr> = plan.iter().filter(|a| a.is_ipv6()).map(|a| a.ip).collect();
        for w in v6.windows(2) {
            assert_ne!(w[0], w[1], "one IP's ports are spread apart: {plan:?}");
        }
    }

    #[test]
    fn list_size_follows_mars_active_and_inactive_rules() {
        let t0 = crate::tests::epoch::epoch();
        let r = Ranking::new("n");
        let ip = |i: u8| ResolvedAddr {
            ip: v4(i, 0).ip,
            port: None,
            source: AddrSource::NewDns,
        };
        let backup = ResolvedAddr {
            ip: v4(99, 0).ip,
            port: None,
            source: AddrSource::Backup,
        };
        // §10.3 example: 1 host, 2 ports, 3 IPs → 5 DNS items + 1 backup.
        let answers = Answers {
            hosts: vec![vec![ip(1), ip(2), ip(3)]],
            backups: vec![backup],
            debug: vec![],
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for p in [ConnectProfile::Phobos, ConnectProfile::MarsClassic] {
            let rules = PlanRules {
                ports: &[80, 443],
                ..rules(p)
            };
            let plan = r.plan(&answers, rules, t0, &mut rng);
            assert_eq!(plan.len(), 6, "{p:?}");
            assert_eq!(plan[5].source, AddrSource::Backup);
            assert!(plan[..5].iter().all(|c| c.source == AddrSource::NewDns));
            // Inactive: 4 DNS items, then backups fill to 5.
            let inactive = PlanRules {
                active: false,
                ..rules
            };
            let plan = r.plan(&answers, inactive, t0, &mut rng);
            assert_eq!(plan.len(), 5);
            assert_eq!(plan[4].source, AddrSource::Backup);
        }
        // Two hosts, inactive: 2 + 2 DNS items.
        let answers = Answers {
            hosts: vec![vec![ip(1), ip(2), ip(3)], vec![ip(4), ip(5), ip(6)]],
            ..Answers::default()
        };
        let rules = PlanRules {
            ports: &[80],
            active: false,
            ..rules(ConnectProfile::Phobos)
        };
        let plan = r.plan(&answers, rules, t0, &mut rng);
        assert_eq!(plan.len(), 4);
        let first_host = plan.iter().filter(|c| c.addr.ip <= v4(3, 0).ip).count();
        assert_eq!(first_host, 2);
        // A debug list is used alone, in order.
        let answers = Answers {
            debug: dns(&[v4(9, 1), v4(8, 1)]),
            hosts: vec![vec![ip(1)]],
            backups: vec![backup],
        };
        let plan = r.plan(&answers, rules, t0, &mut rng);
        assert_eq!(addrs(&plan), vec![v4(9, 1), v4(8, 1)]);
    }

    #[test]
    fn mars_order_puts_history_by_failures_and_alternates_v6_first() {
        let t0 = crate::tests::epoch::epoch();
        let mut r = Ranking::new("n");
        let (h1, h2) = (v4(1, 80), v4(2, 80));
        r.record(t0, h1, false, None);
        r.record(t0, h2, true, None);
        let answers = Answers {
            hosts: vec![dns(&[h1, h2, v6(1, 80), v6(2, 80)])],
            ..Answers::default()
        };
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let plan = addrs(&r.plan(&answers, rules(ConnectProfile::MarsClassic), t0, &mut rng));
            assert_eq!(plan.len(), 4);
            assert!(plan[0].is_ipv6(), "v6 turn first: {plan:?}");
            let p1 = plan.iter().position(|a| *a == h1).unwrap();
            let p2 = plan.iter().position(|a| *a == h2).unwrap();
            assert!(p2 < p1, "fewer failures first: {plan:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(crate::tests::proptest_config(64))]

        /// Whatever the history: no duplicates, no banned primary address, the list size
        /// rule holds, backups come last, and the same seed gives the same plan.
        #[test]
        fn plans_respect_bans_size_and_order(
            history in proptest::collection::vec((0u8..8, proptest::bool::ANY, 0u64..200), 0..60),
            hosts in proptest::collection::vec(proptest::collection::vec(0u8..8, 0..5), 1..3),
            backups in proptest::collection::vec(0u8..10, 0..3),
            mars in proptest::bool::ANY,
            active in proptest::bool::ANY,
            seed in 0u64..1_000,
        ) {
            let t0 = crate::tests::epoch::epoch();
            let mut r = Ranking::new("n");
            let addr = |i: u8| if i % 2 == 0 { v4(i, 80) } else { v6(u16::from(i), 80) };
            let mut now = t0;
            for (i, ok, secs) in history {
                now += Duration::from_secs(secs);
                r.record(now, addr(i), ok, ok.then(|| Duration::from_millis(secs)));
            }
            let answers = Answers {
                hosts: hosts
                    .iter()
                    .map(|h| dns(&h.iter().map(|&i| addr(i)).collect::<Vec<_>>()))
                    .collect(),
                backups: backups
                    .iter()
                    .map(|&i| ResolvedAddr { ip: addr(i).ip, port: None, source: AddrSource::Backup })
                    .collect(),
                debug: vec![],
            };
            let profile = if mars { ConnectProfile::MarsClassic } else { ConnectProfile::Phobos };
            let rules = PlanRules { profile, ports: &[80], room: 5, active };
            let plan = r.plan(&answers, rules, now, &mut ChaCha8Rng::seed_from_u64(seed));
            let again = r.plan(&answers, rules, now, &mut ChaCha8Rng::seed_from_u64(seed));
            proptest::prop_assert_eq!(&plan, &again);
            proptest::prop_assert!(plan.len() <= 6);
            let mut seen = std::collections::BTreeSet::new();
            for c in &plan {
                proptest::prop_assert!(seen.insert(c.addr), "duplicate {:?}", c.addr);
            }
            // Banned primaries only as Phobos's last resort: then nothing else is planned.
            let banned = plan
                .iter()
                .filter(|c| c.source != AddrSource::Backup && r.is_banned(now, &c.addr))
                .count();
            if banned > 0 {
                proptest::prop_assert!(!mars);
                proptest::prop_assert!(plan.iter().all(|c| r.is_banned(now, &c.addr)));
                proptest::prop_assert!(answers.backups.is_empty());
            }
            if let Some(first_backup) = plan.iter().position(|c| c.source == AddrSource::Backup) {
                proptest::prop_assert!(plan[first_backup..].iter().all(|c| c.source == AddrSource::Backup));
            }
            let primaries = plan.iter().filter(|c| c.source != AddrSource::Backup).count();
            let primary_room = if active { 5 } else { 4 };
            proptest::prop_assert!(primaries <= primary_room);
        }
    }

    #[test]
    fn state_round_trips_and_restored_records_are_not_banned() {
        let t0 = crate::tests::epoch::epoch();
        let mut r = Ranking::new("wifi_home");
        let a = v4(1, 80);
        for i in 0..3 {
            r.record(t0 + Duration::from_secs(11 * i), a, false, None);
        }
        r.record(t0, v4(2, 80), true, Some(Duration::from_millis(42)));
        let now = t0 + Duration::from_secs(30);
        assert!(r.is_banned(now, &a));
        let state = r.state(now, UNIX_T0);
        let text = state.to_json();
        let back = RankingState::from_json(&text).unwrap();
        assert_eq!(back, state);
        let mut r2 = Ranking::new("wifi_home");
        r2.restore(&back, UNIX_T0);
        assert!(
            !r2.is_banned(now, &a),
            "restored records carry no failure instant"
        );
        assert_eq!(
            r2.get(&a).unwrap().recent.count_ones(),
            1,
            "folded per byte"
        );
        assert_eq!(r2.rtt(&v4(2, 80)), Some(Duration::from_millis(42)));
        assert_eq!(r2.state(t0, UNIX_T0), state);
        let wrong = text.replace("\"version\": 1", "\"version\": 9");
        assert_eq!(
            RankingState::from_json(&wrong),
            Err(RankingStateError::Version {
                found: 9,
                expected: 1
            })
        );
        assert!(matches!(
            RankingState::from_json("not json"),
            Err(RankingStateError::Malformed(_))
        ));
        let mut old = state.clone();
        old.saved_at_unix = Some(1_000);
        assert!(!old.is_expired(1_000 + 86_399));
        assert!(old.is_expired(1_000 + 86_400));
        assert!(old.is_expired(999));
    }

    #[test]
    fn a_record_unused_for_a_day_is_dropped_though_the_state_is_saved_daily() {
        let t0 = crate::tests::epoch::epoch();
        let s = Duration::from_secs;
        let (home, home_once, cafe) = (v4(1, 443), v4(2, 443), v4(3, 443));
        // Day 0: a café's network, then home, where one address is used only today.
        let mut r = Ranking::new("wifi_cafe");
        r.record(t0, cafe, true, Some(Duration::from_millis(30)));
        r.set_network(t0 + s(HOUR), "wifi_home");
        r.record(t0 + s(HOUR), home, true, None);
        r.record(t0 + s(HOUR), home_once, false, None);
        let mut state = r.state(t0 + s(2 * HOUR), UNIX_T0 + 2 * HOUR);
        let mut kept = Vec::new();
        // Then a run every 20 h at home, each restoring and saving the state.
        for run in 1..=3 {
            let unix = UNIX_T0 + run * 20 * HOUR;
            let mut r = Ranking::new("wifi_home");
            r.restore(&state, unix);
            r.record(t0, home, true, None);
            state = r.state(t0 + s(60), unix + 60);
            assert!(!state.is_expired(unix + 60));
            kept.push(contents(&state));
        }
        let cafe_net = ("wifi_cafe".to_owned(), vec![cafe]);
        assert_eq!(
            kept[0],
            vec![cafe_net, ("wifi_home".to_owned(), vec![home, home_once])],
            "20 h later everything is still there"
        );
        let home_only = vec![("wifi_home".to_owned(), vec![home])];
        assert_eq!(
            kept[1], home_only,
            "the café and the unused address age out"
        );
        assert_eq!(kept[2], home_only);
        // Ages are the last use, not the save time.
        let rec = &state.networks[0].addrs[0];
        assert_eq!(rec.last_used_unix, Some(UNIX_T0 + 60 * HOUR));
        assert_eq!(state.saved_at_unix, Some(UNIX_T0 + 60 * HOUR + 60));
        // A state dated in the future (the wall clock went back) is dropped, as in Mars.
        let mut r = Ranking::new("wifi_home");
        r.restore(&state, UNIX_T0);
        assert!(r.state(t0, UNIX_T0).networks.is_empty());
    }

    #[test]
    fn at_most_16_networks_and_64_addresses_each_are_kept_least_recently_used_dropped_first() {
        let t0 = crate::tests::epoch::epoch();
        let addr = |i: u16| v4(1, 1_000 + i);
        let mut now = t0;
        let mut tick = || {
            now += Duration::from_secs(1);
            now
        };
        let mut r = Ranking::new("net_0");
        for n in 0..10 {
            r.set_network(tick(), &format!("net_{n}"));
            r.record(tick(), addr(0), true, None);
        }
        // Back to net_0, then 14 more networks: net_0 and the newest 15 stay.
        r.set_network(tick(), "net_0");
        r.record(tick(), addr(1), true, None);
        for n in 10..24 {
            r.set_network(tick(), &format!("net_{n}"));
            r.record(tick(), addr(0), true, None);
        }
        // 70 addresses on the last network, address 0 used again after the 64th.
        for i in 0..64 {
            r.record(tick(), addr(i), true, None);
        }
        r.record(tick(), addr(0), false, None);
        for i in 64..70 {
            r.record(tick(), addr(i), true, None);
        }
        let state = r.state(tick(), UNIX_T0);
        let labels: Vec<&str> = state.networks.iter().map(|n| n.label.as_str()).collect();
        let mut expected = vec!["net_9".to_owned(), "net_0".to_owned()];
        expected.extend((10..24).map(|n| format!("net_{n}")));
        assert_eq!(
            labels, expected,
            "least recently used first, the current last"
        );
        let net_0 = state.networks.iter().find(|n| n.label == "net_0").unwrap();
        assert_eq!(net_0.addrs.len(), 2, "a kept network keeps its records");
        let last = state.networks.iter().find(|n| n.label == "net_23").unwrap();
        let kept: Vec<IpPort> = last.addrs.iter().map(|a| a.addr).collect();
        let mut expected: Vec<IpPort> = std::iter::once(0).chain(7..70).map(addr).collect();
        expected.sort();
        assert_eq!(
            kept, expected,
            "addresses 1 to 6 were the least recently used"
        );
        assert_eq!(last.addrs[0].failures, 1, "address 0 kept its history");
    }

    #[test]
    fn a_large_saved_state_is_cut_to_the_current_and_most_recently_used_records() {
        let t0 = crate::tests::epoch::epoch();
        // 30 networks of 100 addresses, each network and address used a minute apart.
        let networks = (0..30u64)
            .map(|n| NetworkRecords {
                label: format!("net_{n}"),
                last_used_unix: Some(UNIX_T0 - 2 * HOUR + n * 60),
                addrs: (0..100u16)
                    .map(|i| AddrRecord {
                        addr: v4(1, 1_000 + i),
                        history: 0,
                        successes: 1,
                        failures: 0,
                        rtt_ms: None,
                        last_used_unix: Some(UNIX_T0 - 2 * HOUR + u64::from(i) * 60),
                    })
                    .collect(),
            })
            .collect();
        let big = RankingState {
            version: RankingState::VERSION,
            saved_at_unix: Some(UNIX_T0 - HOUR),
            networks,
        };
        // The current network is the oldest in the file.
        let mut r = Ranking::new("net_0");
        r.restore(&big, UNIX_T0);
        let state = r.state(t0, UNIX_T0);
        let labels: Vec<&str> = state.networks.iter().map(|n| n.label.as_str()).collect();
        let mut expected: Vec<String> = (15..30).map(|n| format!("net_{n}")).collect();
        expected.push("net_0".to_owned());
        assert_eq!(labels, expected);
        for net in &state.networks {
            let kept: Vec<IpPort> = net.addrs.iter().map(|a| a.addr).collect();
            let newest: Vec<IpPort> = (36..100).map(|i| v4(1, 1_000 + i)).collect();
            assert_eq!(kept, newest, "{}", net.label);
        }
    }

    #[test]
    fn a_file_without_ages_loads_and_dates_its_records_by_its_save_time() {
        let t0 = crate::tests::epoch::epoch();
        // As earlier builds wrote it: no `last_used_unix` anywhere.
        let saved = UNIX_T0 - HOUR;
        let text = format!(
            r#"{{"version": 1, "saved_at_unix": {saved}, "networks": [
                {{"label": "wifi_a", "addrs": [{{"addr": {{"ip": "10.0.0.1", "port": 80}},
                  "history": 1, "successes": 2, "failures": 1, "rtt_ms": 40}}]}}]}}"#
        );
        let old = RankingState::from_json(&text).unwrap();
        let mut r = Ranking::new("wifi_b");
        r.restore(&old, UNIX_T0);
        let state = r.state(t0, UNIX_T0);
        assert_eq!(state.networks[0].addrs[0].rtt_ms, Some(40));
        assert_eq!(state.networks[0].last_used_unix, Some(saved));
        assert_eq!(state.networks[0].addrs[0].last_used_unix, Some(saved));
        // A day after that save, they are gone.
        let mut r = Ranking::new("wifi_b");
        r.restore(&old, saved + 86_400);
        assert!(r.state(t0, saved + 86_400).networks.is_empty());
    }
}

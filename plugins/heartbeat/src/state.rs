//! The smart heartbeat's learnt state per network label, and its text form.
//!
//! The text form follows Mars's `Heartbeat.ini`: one section per network label, keys
//! `modifyTime` (Unix seconds), `curHeart` (ms), `failHeartCount`, `stable` (0/1), `netType`,
//! `hearttype` (0 none, 1 smart, 2 doze), `minheartfail`, plus `succHeartCount`, which Mars
//! keeps only in memory and Phobos also saves so an import resumes exactly where the export
//! left off.
//!
//! ```text
//! [wifi_home]
//! modifyTime=1764115200
//! curHeart=270000
//! failHeartCount=0
//! stable=0
//! netType=1
//! hearttype=1
//! minheartfail=0
//! succHeartCount=2
//! ```
//!
//! Section names are labels with `%`, `[`, `]`, `=` and control characters percent-encoded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use phobos_plugin_api::NetKind;

/// At most this many labels are kept; the one modified longest ago goes first.
pub const MAX_LABELS: usize = 20;

pub(crate) const MIN_HEART_MS: u64 = 210_000;
pub(crate) const MAX_HEART_MS: u64 = 600_000;
pub(crate) const SUCCESS_STEP_MS: u64 = 20_000;
/// `MaxHeartInterval - SuccessStep`: the highest interval the smart heartbeat uses.
pub(crate) const CEILING_MS: u64 = MAX_HEART_MS - SUCCESS_STEP_MS;

/// Counters are clamped to this on import so a damaged file cannot overflow them.
const MAX_COUNTER: u32 = 1_000;

/// How a label's current interval was found (Mars's `heart_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HeartType {
    /// Nothing found yet.
    #[default]
    None,
    /// Found by the normal step-up/step-down search.
    Smart,
    /// Found while the device showed doze-style (late) timers: jumps straight between the
    /// floor and the ceiling.
    Doze,
}

/// What the smart heartbeat has learnt about one network label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelState {
    /// The interval being used or tried, in [`MIN_HEART_INTERVAL`](crate::MIN_HEART_INTERVAL)
    /// ..= 580 s.
    pub cur_heart: Duration,
    /// Whether the search has settled on `cur_heart`.
    pub stable: bool,
    /// Consecutive failures at `cur_heart`.
    pub fail_count: u32,
    /// Consecutive successes at `cur_heart`.
    pub succ_count: u32,
    /// Failures in a row during the first heartbeats of connections (≥ 6 means a bad network).
    pub min_heart_fail_count: u32,
    /// How `cur_heart` was found.
    pub heart_type: HeartType,
    /// The network kind last seen with this label.
    pub net: NetKind,
    /// When this state last changed, in seconds since the Unix epoch.
    pub modify_time: u64,
}

impl LabelState {
    /// A fresh label: 210 s, searching.
    pub(crate) fn new(net: NetKind, modify_time: u64) -> Self {
        LabelState {
            cur_heart: Duration::from_millis(MIN_HEART_MS),
            stable: false,
            fail_count: 0,
            succ_count: 0,
            min_heart_fail_count: 0,
            heart_type: HeartType::None,
            net,
            modify_time,
        }
    }

    /// Whether the first heartbeats of connections keep failing (Mars reports a bad network
    /// at 6).
    pub fn is_bad_network(&self) -> bool {
        self.min_heart_fail_count >= 6
    }

    pub(crate) fn cur_ms(&self) -> u64 {
        self.cur_heart.as_millis() as u64
    }

    pub(crate) fn set_cur_ms(&mut self, ms: u64) {
        self.cur_heart = Duration::from_millis(ms);
    }
}

/// All labels, keyed by label, at most [`MAX_LABELS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Labels(pub(crate) BTreeMap<String, LabelState>);

impl Labels {
    /// The state of `label`, created fresh (evicting the oldest label if full) when missing.
    pub(crate) fn entry(&mut self, label: &str, net: NetKind, now_secs: u64) -> &mut LabelState {
        if !self.0.contains_key(label) {
            while self.0.len() >= MAX_LABELS {
                self.evict_oldest();
            }
            self.0
                .insert(label.to_owned(), LabelState::new(net, now_secs));
        }
        // Present: inserted just above if it was missing.
        self.0.get_mut(label).expect("label present")
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .0
            .iter()
            .min_by(|(la, a), (lb, b)| (a.modify_time, la).cmp(&(b.modify_time, lb)))
            .map(|(label, _)| label.clone());
        if let Some(label) = oldest {
            self.0.remove(&label);
        }
    }

    /// Keeps the [`MAX_LABELS`] newest labels (by modification time, then label): what
    /// evicting the oldest one at a time keeps, in one sort.
    ///
    /// Design: a state file holds at most 20 labels as written, but one read back may hold
    /// any number (damage, another writer): evicting one at a time scanned every label per
    /// eviction, and 32,000 sections (1 MB) took 27 s of the client's start.
    fn keep_newest(&mut self) {
        if self.0.len() <= MAX_LABELS {
            return;
        }
        let mut all: Vec<(String, LabelState)> = std::mem::take(&mut self.0).into_iter().collect();
        all.sort_unstable_by(|(la, a), (lb, b)| (b.modify_time, lb).cmp(&(a.modify_time, la)));
        all.truncate(MAX_LABELS);
        self.0 = all.into_iter().collect();
    }

    /// The text form (see the module docs).
    pub(crate) fn export(&self) -> String {
        let mut out = String::new();
        for (label, s) in &self.0 {
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "[{}]\nmodifyTime={}\ncurHeart={}\nfailHeartCount={}\nstable={}\nnetType={}\n\
                 hearttype={}\nminheartfail={}\nsuccHeartCount={}\n",
                encode_label(label),
                s.modify_time,
                s.cur_ms(),
                s.fail_count,
                u8::from(s.stable),
                net_code(s.net),
                heart_type_code(s.heart_type),
                s.min_heart_fail_count,
                s.succ_count,
            );
        }
        out
    }

    /// Parses the text form. `None` when the text is not in this format at all (a line that
    /// is neither blank, a comment, a `[section]` nor a `key=value`). Sections without a
    /// readable `modifyTime`, with one after `now_secs`, or without a readable `curHeart` are
    /// dropped; values are clamped; if more than [`MAX_LABELS`] remain, the oldest go.
    pub(crate) fn import(text: &str, now_secs: u64) -> Option<Labels> {
        // Design: one section at a time, keeping only the keys a section is read for and at
        // most twice the labels kept: a damaged or hostile file (the driver reads up to
        // 8 MiB) made the whole-file parse allocate 24 times its size first (a file of
        // empty sections, 201 MB), at start-up, where a phone's app gets killed for it.
        let mut labels = Labels::default();
        let mut section: Option<(String, BTreeMap<&str, &str>)> = None;
        let finish = |labels: &mut Labels, section: Option<(String, BTreeMap<&str, &str>)>| {
            let Some((label, keys)) = section else {
                return;
            };
            if label.is_empty() || label.len() > MAX_LABEL_LEN {
                return;
            }
            if let Some(state) = parse_section(&keys, now_secs) {
                labels.0.insert(label, state);
                if labels.0.len() > 2 * MAX_LABELS {
                    labels.keep_newest();
                }
            }
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                finish(&mut labels, section.take());
                section = Some((decode_label(name)?, BTreeMap::new()));
                continue;
            }
            let (key, value) = line.split_once('=')?;
            // A key before any section belongs to no label: not our format.
            let (_, keys) = section.as_mut()?;
            let key = key.trim();
            if SECTION_KEYS.contains(&key) {
                keys.insert(key, value.trim());
            }
        }
        finish(&mut labels, section.take());
        labels.keep_newest();
        Some(labels)
    }
}

/// The keys a section is read for ([`parse_section`]); others are skipped.
const SECTION_KEYS: [&str; 8] = [
    "modifyTime",
    "curHeart",
    "failHeartCount",
    "succHeartCount",
    "minheartfail",
    "stable",
    "netType",
    "hearttype",
];

/// The longest label imported (a network's label is a short name or an address set's
/// digest); a longer one is dropped with its section.
const MAX_LABEL_LEN: usize = 1024;

fn parse_section(keys: &BTreeMap<&str, &str>, now_secs: u64) -> Option<LabelState> {
    let modify_time: u64 = keys.get("modifyTime")?.parse().ok()?;
    if modify_time > now_secs {
        return None;
    }
    let cur: u64 = keys.get("curHeart")?.parse().ok()?;
    let counter = |k: &str| {
        keys.get(k)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
            .min(MAX_COUNTER)
    };
    let stable = matches!(keys.get("stable").copied(), Some("1" | "true"));
    let net = match keys.get("netType").copied() {
        Some("1") => NetKind::Wifi,
        Some("2") => NetKind::Mobile,
        Some("3") => NetKind::Other,
        _ => NetKind::None,
    };
    let heart_type = match keys.get("hearttype").copied() {
        Some("1") => HeartType::Smart,
        Some("2") => HeartType::Doze,
        _ => HeartType::None,
    };
    Some(LabelState {
        cur_heart: Duration::from_millis(cur.clamp(MIN_HEART_MS, CEILING_MS)),
        stable,
        fail_count: counter("failHeartCount"),
        succ_count: counter("succHeartCount"),
        min_heart_fail_count: counter("minheartfail"),
        heart_type,
        net,
        modify_time,
    })
}

fn net_code(net: NetKind) -> i32 {
    match net {
        NetKind::Wifi => 1,
        NetKind::Mobile => 2,
        NetKind::Other => 3,
        _ => -1,
    }
}

fn heart_type_code(t: HeartType) -> u8 {
    match t {
        HeartType::None => 0,
        HeartType::Smart => 1,
        HeartType::Doze => 2,
    }
}

fn encode_label(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for c in label.chars() {
        if matches!(c, '%' | '[' | ']' | '=') || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn decode_label(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(cur: u64, modify_time: u64) -> LabelState {
        let mut s = LabelState::new(NetKind::Wifi, modify_time);
        s.set_cur_ms(cur);
        s
    }

    #[test]
    fn export_import_round_trip_with_odd_labels() {
        let mut labels = Labels::default();
        labels
            .0
            .insert("wifi_[home]=%\n".into(), state(270_000, 100));
        let mut s = state(580_000, 200);
        s.stable = true;
        s.heart_type = HeartType::Doze;
        s.fail_count = 1;
        s.succ_count = 4;
        s.min_heart_fail_count = 2;
        s.net = NetKind::Mobile;
        labels.0.insert("mobile_46000".into(), s);
        let text = labels.export();
        assert!(text.contains("[wifi_%5Bhome%5D%3D%25%0A]\nmodifyTime=100\ncurHeart=270000\n"));
        let back = Labels::import(&text, 1_000).unwrap();
        assert_eq!(back, labels);
        assert_eq!(back.export(), text);
    }

    #[test]
    fn import_drops_future_and_missing_times_and_clamps() {
        let text = "[a]\nmodifyTime=50\ncurHeart=10\n\
                    [b]\nmodifyTime=5000\ncurHeart=300000\n\
                    [c]\ncurHeart=300000\n\
                    [d]\nmodifyTime=x\ncurHeart=300000\n\
                    [e]\nmodifyTime=60\ncurHeart=9999999\nfailHeartCount=4000000000\nstable=1\n\
                    [f]\nmodifyTime=70\n";
        let labels = Labels::import(text, 1_000).unwrap();
        let names: Vec<&str> = labels.0.keys().map(String::as_str).collect();
        assert_eq!(names, ["a", "e"]);
        assert_eq!(labels.0["a"].cur_ms(), MIN_HEART_MS);
        assert_eq!(labels.0["e"].cur_ms(), CEILING_MS);
        assert_eq!(labels.0["e"].fail_count, MAX_COUNTER);
        assert!(labels.0["e"].stable);
    }

    #[test]
    fn import_keeps_the_newest_twenty() {
        let mut text = String::new();
        for i in 0..30 {
            text += &format!("[l{i:02}]\nmodifyTime={}\ncurHeart=250000\n", 100 + i);
        }
        let labels = Labels::import(&text, 1_000).unwrap();
        assert_eq!(labels.0.len(), MAX_LABELS);
        assert!(!labels.0.contains_key("l09"));
        assert!(labels.0.contains_key("l10"));
        assert!(labels.0.contains_key("l29"));
    }

    #[test]
    fn text_in_another_format_is_refused() {
        for bad in ["garbage", "key=value", "[a]\njunk line", "[a%zz]\n", "[a%]"] {
            assert_eq!(Labels::import(bad, 10), None, "{bad:?}");
        }
        assert_eq!(Labels::import("", 10), Some(Labels::default()));
        assert_eq!(
            Labels::import("; comment\n\n[x]\n", 10),
            Some(Labels::default())
        );
    }

    #[test]
    fn entry_creates_and_evicts_the_oldest() {
        let mut labels = Labels::default();
        for i in 0..MAX_LABELS as u64 {
            labels.entry(&format!("l{i}"), NetKind::Wifi, 100 + i);
        }
        labels.0.get_mut("l0").unwrap().modify_time = 500;
        labels.entry("new", NetKind::Mobile, 600);
        assert_eq!(labels.0.len(), MAX_LABELS);
        assert!(labels.0.contains_key("l0"));
        assert!(!labels.0.contains_key("l1"));
        assert_eq!(labels.0["new"].net, NetKind::Mobile);
        assert_eq!(labels.0["new"].cur_ms(), MIN_HEART_MS);
    }

    /// A file of many sections (damage, another writer) keeps the newest 20, as evicting
    /// the oldest one at a time would, and takes one sort to read: 50,000 sections took
    /// minutes with an eviction scan per section over.
    #[test]
    fn a_file_of_many_labels_keeps_the_newest_twenty_at_once() {
        let text = |n: u64| -> String {
            (0..n)
                .map(|i| {
                    // Times repeat, so ties are broken by the label as the eviction does.
                    let t = (i * 7_919) % 1_000;
                    format!("[l{i}]\nmodifyTime={t}\ncurHeart=240000\n")
                })
                .collect()
        };
        let one_by_one = |text: &str| {
            let mut sections = Labels::default();
            for chunk in text.split("[l").skip(1) {
                let one = Labels::import(&format!("[l{chunk}"), 2_000).unwrap();
                sections.0.extend(one.0);
            }
            while sections.0.len() > MAX_LABELS {
                sections.evict_oldest();
            }
            sections
        };
        let small = text(300);
        assert_eq!(Labels::import(&small, 2_000).unwrap(), one_by_one(&small));
        let big = Labels::import(&text(50_000), 2_000).unwrap();
        assert_eq!(big.0.len(), MAX_LABELS);
        assert!(big.0.values().all(|s| s.modify_time >= 990), "{big:?}");
    }
}

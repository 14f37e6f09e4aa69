//! The smart heartbeat reproduces the schedules of spec §12, in virtual time with a manual
//! wall clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use phobos_heartbeat::{HeartType, ManualClock, SmartHeartbeat, SmartHeartbeatConfig, WallClock};
use phobos_plugin_api::{HeartbeatContext, HeartbeatPolicy, HeartbeatPolicyFactory, NetKind};

const START_UNIX: u64 = 1_764_115_200;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A client with one smart heartbeat factory, a virtual monotonic clock and a manual wall
/// clock that move together.
struct Sim {
    factory: SmartHeartbeat,
    clock: ManualClock,
    now: Instant,
    ctx: HeartbeatContext,
}

/// What happens to the heartbeat sent after a gap.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Ack,
    Timeout,
}

impl Sim {
    fn new(ctx: HeartbeatContext) -> Self {
        let clock = ManualClock::at_unix_secs(START_UNIX);
        let factory =
            SmartHeartbeat::with_clock(SmartHeartbeatConfig::default(), Arc::new(clock.clone()))
                .unwrap();
        Sim {
            factory,
            clock,
            now: Instant::now(),
            ctx,
        }
    }

    fn inactive_wifi() -> Self {
        Self::new(HeartbeatContext {
            net: NetKind::Wifi,
            net_label: "wifi_home".into(),
            app_active: false,
        })
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.clock.advance(by);
    }

    fn connect(&mut self) -> Box<dyn HeartbeatPolicy> {
        self.factory.build(self.now, &self.ctx)
    }

    /// Sends a heartbeat now, asks for the next interval, reports `outcome`, and moves time
    /// on by the interval (or by the 8 s reply timeout on a timeout). Returns the interval.
    fn beat(&mut self, policy: &mut dyn HeartbeatPolicy, outcome: Outcome) -> Duration {
        let interval = policy
            .next_interval(self.now, &self.ctx)
            .expect("periodic heartbeats are on");
        match outcome {
            Outcome::Ack => {
                policy.on_ack(
                    self.now + Duration::from_millis(60),
                    Duration::from_millis(60),
                );
                self.advance(interval);
            }
            Outcome::Timeout => {
                self.advance(Duration::from_secs(8));
                policy.on_timeout(self.now);
            }
        }
        interval
    }

    /// Runs links against a NAT that silently drops links idle for more than `idle_limit`:
    /// the heartbeat after a longer gap times out and the client reconnects at once.
    /// Returns the gaps between heartbeats, `beats` of them, marking gaps that failed.
    fn run_with_nat(&mut self, idle_limit: Duration, beats: usize) -> Vec<(u64, bool)> {
        let mut gaps: Vec<(u64, bool)> = Vec::new();
        let mut policy = self.connect();
        let mut last_gap = Duration::ZERO;
        while gaps.len() < beats {
            if last_gap > idle_limit {
                self.beat(&mut *policy, Outcome::Timeout);
                if let Some(last) = gaps.last_mut() {
                    last.1 = true;
                }
                policy = self.connect();
                last_gap = Duration::ZERO;
                continue;
            }
            last_gap = self.beat(&mut *policy, Outcome::Ack);
            gaps.push((last_gap.as_secs(), false));
        }
        gaps
    }

    fn label(&self) -> phobos_heartbeat::LabelState {
        self.factory.label_state(&self.ctx.net_label).unwrap()
    }
}

fn repeat(pattern: &[(u64, usize)]) -> Vec<u64> {
    pattern
        .iter()
        .flat_map(|&(secs, n)| std::iter::repeat_n(secs, n))
        .collect()
}

#[test]
fn all_successes_climb_in_60_s_steps_to_580_s() {
    let mut sim = Sim::inactive_wifi();
    let mut policy = sim.connect();
    let gaps: Vec<u64> = (0..80)
        .map(|_| sim.beat(&mut *policy, Outcome::Ack).as_secs())
        .collect();
    let mut expected = repeat(&[
        (210, 8),
        (270, 6),
        (330, 6),
        (390, 6),
        (450, 6),
        (510, 6),
        (570, 6),
    ]);
    expected.resize(80, 580);
    assert_eq!(gaps, expected);
    let st = sim.label();
    assert!(st.stable);
    assert_eq!(st.cur_heart, Duration::from_secs(580));
    assert_eq!(st.heart_type, HeartType::Smart);
    // About 4 h 40 min to converge, as the spec says.
    let converge: u64 = expected.iter().take(44).sum();
    assert_eq!(converge, 16_800);
}

#[test]
fn two_failures_at_450_s_settle_at_370_s() {
    let mut sim = Sim::inactive_wifi();
    let gaps = sim.run_with_nat(Duration::from_secs(400), 60);
    let mut expected: Vec<(u64, bool)> = repeat(&[(210, 8), (270, 6), (330, 6), (390, 6)])
        .into_iter()
        .map(|g| (g, false))
        .collect();
    expected.push((450, true));
    expected.extend([(210, false), (210, false), (210, false), (450, true)]);
    expected.extend([(210, false), (210, false), (210, false)]);
    expected.resize(60, (370, false));
    assert_eq!(gaps, expected);
    let st = sim.label();
    assert!(st.stable);
    assert_eq!(st.cur_heart, Duration::from_secs(370));
}

#[test]
fn an_active_app_always_gets_210_s() {
    let mut sim = Sim::new(HeartbeatContext {
        net: NetKind::Mobile,
        net_label: "mobile_46000".into(),
        app_active: true,
    });
    let mut policy = sim.connect();
    for _ in 0..100 {
        assert_eq!(
            sim.beat(&mut *policy, Outcome::Ack),
            Duration::from_secs(210)
        );
    }
    // As in Mars, answers at 210 s still count while the label's interval is 210 s, so it
    // steps up once; after that the 210 s intervals no longer match the label's and teach
    // nothing.
    let st = sim.label();
    assert_eq!(st.cur_heart, Duration::from_secs(270));
    assert!(!st.stable);
}

#[test]
fn after_reconnect_210_s_until_three_successes_then_the_learnt_value() {
    let mut sim = Sim::inactive_wifi();
    let mut policy = sim.connect();
    for _ in 0..14 {
        sim.beat(&mut *policy, Outcome::Ack);
    }
    assert_eq!(sim.label().cur_heart, Duration::from_secs(330));
    policy.on_disconnect(sim.now);
    let mut policy = sim.connect();
    let gaps: Vec<u64> = (0..5)
        .map(|_| sim.beat(&mut *policy, Outcome::Ack).as_secs())
        .collect();
    assert_eq!(gaps, [210, 210, 210, 330, 330]);
}

#[test]
fn activity_changes_switch_between_210_s_and_the_learnt_value() {
    let mut sim = Sim::inactive_wifi();
    let mut policy = sim.connect();
    for _ in 0..8 {
        sim.beat(&mut *policy, Outcome::Ack);
    }
    assert_eq!(sim.beat(&mut *policy, Outcome::Ack).as_secs(), 270);
    sim.ctx.app_active = true;
    assert_eq!(sim.beat(&mut *policy, Outcome::Ack).as_secs(), 210);
    sim.ctx.app_active = false;
    assert_eq!(sim.beat(&mut *policy, Outcome::Ack).as_secs(), 270);
}

#[test]
fn a_link_closing_with_a_heartbeat_outstanding_counts_as_a_failure() {
    let mut sim = Sim::inactive_wifi();
    let mut policy = sim.connect();
    for _ in 0..27 {
        sim.beat(&mut *policy, Outcome::Ack);
    }
    assert_eq!(sim.label().cur_heart, Duration::from_secs(450));
    for _ in 0..2 {
        // The heartbeat after the 450 s gap is sent; the link breaks before any answer.
        assert_eq!(
            policy.next_interval(sim.now, &sim.ctx),
            Some(Duration::from_secs(450))
        );
        policy.on_disconnect(sim.now);
        policy = sim.connect();
        for _ in 0..4 {
            sim.beat(&mut *policy, Outcome::Ack);
        }
    }
    let st = sim.label();
    assert!(st.stable);
    assert_eq!(st.cur_heart, Duration::from_secs(370));
    // A disconnect with nothing outstanding is not a failure.
    policy.on_disconnect(sim.now);
    policy.on_disconnect(sim.now);
    assert_eq!(sim.label().fail_count, 0);
}

#[test]
fn a_stable_label_probes_20_s_higher_after_seven_quiet_days() {
    for (quiet_days, probes) in [(6, false), (7, true), (30, true)] {
        let mut sim = Sim::inactive_wifi();
        let state = format!(
            "[wifi_home]\nmodifyTime={}\ncurHeart=370000\nstable=1\nhearttype=1\n",
            START_UNIX
        );
        assert!(sim.factory.import_state(&state));
        sim.clock.advance(DAY * quiet_days);
        let mut policy = sim.connect();
        let gaps: Vec<u64> = (0..6)
            .map(|_| sim.beat(&mut *policy, Outcome::Ack).as_secs())
            .collect();
        let st = sim.label();
        if probes {
            assert_eq!(gaps, [210, 210, 210, 370, 390, 390], "{quiet_days} days");
            assert!(!st.stable);
            assert_eq!(st.cur_heart, Duration::from_secs(390));
            // Saved at the probe (when the heartbeat after the third 210 s gap was answered)
            // and since.
            assert!(st.modify_time >= START_UNIX + quiet_days as u64 * 86_400 + 630);
        } else {
            assert_eq!(gaps, [210, 210, 210, 370, 370, 370], "{quiet_days} days");
            assert!(st.stable);
            // Successes on a stable label do not refresh its modify time.
            assert_eq!(st.modify_time, START_UNIX);
        }
    }
}

#[test]
fn no_probe_above_the_ceiling() {
    let mut sim = Sim::inactive_wifi();
    let state = format!("[wifi_home]\nmodifyTime={START_UNIX}\ncurHeart=580000\nstable=1\n");
    assert!(sim.factory.import_state(&state));
    sim.clock.advance(DAY * 30);
    let mut policy = sim.connect();
    let gaps: Vec<u64> = (0..8)
        .map(|_| sim.beat(&mut *policy, Outcome::Ack).as_secs())
        .collect();
    assert_eq!(gaps, [210, 210, 210, 580, 580, 580, 580, 580]);
    assert!(sim.label().stable);
}

#[test]
fn two_failures_on_a_stable_label_restart_the_search_from_210_s() {
    let mut sim = Sim::inactive_wifi();
    let state = format!("[wifi_home]\nmodifyTime={START_UNIX}\ncurHeart=450000\nstable=1\n");
    assert!(sim.factory.import_state(&state));
    let gaps = sim.run_with_nat(Duration::from_secs(400), 10);
    assert_eq!(
        gaps,
        [
            (210, false),
            (210, false),
            (210, false),
            (450, true),
            (210, false),
            (210, false),
            (210, false),
            (450, true),
            (210, false),
            (210, false),
        ]
    );
    let st = sim.label();
    assert!(!st.stable);
    assert_eq!(st.cur_heart, Duration::from_secs(210));
}

#[test]
fn doze_style_jumps_straight_to_580_s() {
    let mut sim = Sim::new(HeartbeatContext {
        net: NetKind::Mobile,
        net_label: "mobile_46001".into(),
        app_active: false,
    });
    let mut policy = sim.connect();
    // Two timers firing 30 s late: doze style (doze 2 > 2 × normal 0).
    policy.on_fired_late(sim.now, Duration::from_secs(30));
    assert!(!sim.factory.is_doze_style());
    policy.on_fired_late(sim.now, Duration::from_secs(30));
    assert!(sim.factory.is_doze_style());
    let gaps: Vec<u64> = (0..20)
        .map(|_| sim.beat(&mut *policy, Outcome::Ack).as_secs())
        .collect();
    let mut expected = vec![210; 8];
    expected.resize(20, 580);
    assert_eq!(gaps, expected);
    let st = sim.label();
    assert!(st.stable);
    assert_eq!(st.heart_type, HeartType::Doze);
    assert_eq!(st.cur_heart, Duration::from_secs(580));
}

#[test]
fn doze_detection_counts_only_inactive_mobile_and_on_time_firings_undo_it() {
    let mut sim = Sim::inactive_wifi();
    let mut policy = sim.connect();
    for _ in 0..5 {
        policy.on_fired_late(sim.now, Duration::from_secs(60));
    }
    assert!(!sim.factory.is_doze_style(), "Wi-Fi never counts");

    sim.ctx = HeartbeatContext {
        net: NetKind::Mobile,
        net_label: "mobile_1".into(),
        app_active: false,
    };
    let mut policy = sim.connect();
    policy.on_fired_late(sim.now, Duration::from_secs(19));
    policy.on_fired_late(sim.now, Duration::from_secs(20));
    policy.on_fired_late(sim.now, Duration::from_secs(20));
    // On time: normal 1. Late twice: doze 2, normal 0 (floor).
    assert!(sim.factory.is_doze_style());
    for _ in 0..3 {
        policy.on_fired_late(sim.now, Duration::ZERO);
    }
    assert!(!sim.factory.is_doze_style());
}

#[test]
fn doze_style_resets_a_smart_label_to_210_s_once() {
    let mut sim = Sim::new(HeartbeatContext {
        net: NetKind::Mobile,
        net_label: "mobile_2".into(),
        app_active: false,
    });
    let state =
        format!("[mobile_2]\nmodifyTime={START_UNIX}\ncurHeart=390000\nstable=1\nhearttype=1\n");
    assert!(sim.factory.import_state(&state));
    let mut policy = sim.connect();
    policy.on_fired_late(sim.now, Duration::from_secs(40));
    policy.on_fired_late(sim.now, Duration::from_secs(40));
    let gaps: Vec<u64> = (0..12)
        .map(|_| sim.beat(&mut *policy, Outcome::Ack).as_secs())
        .collect();
    // Reset to 210 (doze search), 5 counted successes, then the jump to 580.
    assert_eq!(
        gaps,
        [210, 210, 210, 210, 210, 210, 210, 210, 580, 580, 580, 580]
    );
    assert_eq!(sim.label().heart_type, HeartType::Doze);
}

#[test]
fn no_label_or_no_network_means_210_s_and_no_state() {
    for (net, label) in [(NetKind::Wifi, ""), (NetKind::None, "wifi_x")] {
        let mut sim = Sim::new(HeartbeatContext {
            net,
            net_label: label.into(),
            app_active: false,
        });
        let mut policy = sim.connect();
        for _ in 0..30 {
            assert_eq!(sim.beat(&mut *policy, Outcome::Ack).as_secs(), 210);
        }
        assert_eq!(sim.factory.export_state().as_deref(), Some(""));
    }
}

#[test]
fn a_network_change_moves_to_the_new_label_and_recounts() {
    let mut sim = Sim::inactive_wifi();
    let mut policy = sim.connect();
    for _ in 0..14 {
        sim.beat(&mut *policy, Outcome::Ack);
    }
    assert_eq!(sim.beat(&mut *policy, Outcome::Ack).as_secs(), 330);
    sim.ctx.net_label = "wifi_office".into();
    policy.on_network_change(sim.now, &sim.ctx);
    let gaps: Vec<u64> = (0..4)
        .map(|_| sim.beat(&mut *policy, Outcome::Ack).as_secs())
        .collect();
    assert_eq!(gaps, [210, 210, 210, 210]);
    assert_eq!(
        sim.factory.label_state("wifi_home").unwrap().cur_heart,
        Duration::from_secs(330)
    );
}

#[test]
fn forced_interval_overrides_learning() {
    let mut sim = Sim::inactive_wifi();
    sim.factory
        .force_interval(Some(Some(Duration::from_secs(45))))
        .unwrap();
    let mut policy = sim.connect();
    assert_eq!(
        policy.next_interval(sim.now, &sim.ctx),
        Some(Duration::from_secs(45))
    );
    sim.factory.force_interval(Some(None)).unwrap();
    assert_eq!(policy.next_interval(sim.now, &sim.ctx), None);
    sim.factory.force_interval(None).unwrap();
    assert_eq!(
        policy.next_interval(sim.now, &sim.ctx),
        Some(Duration::from_secs(210))
    );
    assert!(sim
        .factory
        .force_interval(Some(Some(Duration::from_millis(10))))
        .is_err());
    let forced = SmartHeartbeat::new(SmartHeartbeatConfig {
        forced_interval_ms: Some(0),
    })
    .unwrap();
    assert_eq!(
        forced
            .build(sim.now, &sim.ctx)
            .next_interval(sim.now, &sim.ctx),
        None
    );
    assert!(SmartHeartbeat::new(SmartHeartbeatConfig {
        forced_interval_ms: Some(5_000_000),
    })
    .is_err());
}

#[test]
fn exported_state_restores_the_learnt_interval_in_a_new_process() {
    let mut sim = Sim::inactive_wifi();
    let mut policy = sim.connect();
    for _ in 0..20 {
        sim.beat(&mut *policy, Outcome::Ack);
    }
    let text = sim.factory.export_state().unwrap();
    assert!(text.starts_with("[wifi_home]\n"), "{text}");
    assert!(text.contains("curHeart=390000\n"), "{text}");

    let mut next = Sim::inactive_wifi();
    next.clock.set(sim.clock.now());
    assert!(next.factory.import_state(&text));
    assert_eq!(next.factory.export_state().as_deref(), Some(text.as_str()));
    let mut policy = next.connect();
    let gaps: Vec<u64> = (0..4)
        .map(|_| next.beat(&mut *policy, Outcome::Ack).as_secs())
        .collect();
    assert_eq!(gaps, [210, 210, 210, 390]);
}

#[test]
fn import_ignores_corrupt_state_and_keeps_what_it_had() {
    let mut sim = Sim::inactive_wifi();
    let mut policy = sim.connect();
    for _ in 0..15 {
        sim.beat(&mut *policy, Outcome::Ack);
    }
    let before = sim.factory.export_state();
    for bad in [
        "not ini",
        "[x]\nno equals sign",
        "k=v before a section",
        "[bad%zz]",
    ] {
        assert!(!sim.factory.import_state(bad), "{bad:?}");
        assert_eq!(sim.factory.export_state(), before);
    }
}

#[test]
fn import_drops_future_sections_and_keeps_twenty() {
    let sim = Sim::inactive_wifi();
    let mut text = format!(
        "[future]\nmodifyTime={}\ncurHeart=300000\n",
        START_UNIX + 10
    );
    for i in 0..25u64 {
        text += &format!(
            "[l{i:02}]\nmodifyTime={}\ncurHeart=250000\n",
            START_UNIX - 100 + i
        );
    }
    assert!(sim.factory.import_state(&text));
    assert!(sim.factory.label_state("future").is_none());
    assert!(sim.factory.label_state("l04").is_none());
    assert!(sim.factory.label_state("l05").is_some());
    assert_eq!(
        sim.factory.label_state("l24").unwrap().cur_heart,
        Duration::from_secs(250)
    );
}

#[test]
fn at_most_twenty_labels_are_kept_while_running() {
    let mut sim = Sim::inactive_wifi();
    for i in 0..30 {
        sim.ctx.net_label = format!("wifi_{i}");
        let mut policy = sim.connect();
        sim.beat(&mut *policy, Outcome::Ack);
        sim.advance(Duration::from_secs(1));
    }
    let text = sim.factory.export_state().unwrap();
    assert_eq!(text.matches('[').count(), 20);
    assert!(sim.factory.label_state("wifi_9").is_none());
    assert!(sim.factory.label_state("wifi_10").is_some());
}

#[test]
fn repeated_early_failures_mark_a_bad_network() {
    let mut sim = Sim::inactive_wifi();
    for _ in 0..6 {
        let mut policy = sim.connect();
        sim.beat(&mut *policy, Outcome::Timeout);
    }
    assert!(sim.label().is_bad_network());
    let mut policy = sim.connect();
    sim.beat(&mut *policy, Outcome::Ack);
    assert!(!sim.label().is_bad_network());
}

#[test]
fn two_links_on_one_network_each_learn_on_their_own_count() {
    // As each Mars long link has its own smart heartbeat: two links need five answered
    // heartbeats each per step. Before, both counted into one state, and link a's schedule
    // climbed about twice as fast ([210×6, 270×3, 330×4, …]).
    let clock = phobos_heartbeat::ManualClock::at_unix_secs(1_764_115_200);
    let f = phobos_heartbeat::SmartHeartbeat::with_clock(
        phobos_heartbeat::SmartHeartbeatConfig::default(),
        std::sync::Arc::new(clock.clone()),
    )
    .unwrap();
    let c = phobos_plugin_api::HeartbeatContext {
        net: phobos_plugin_api::NetKind::Wifi,
        net_label: "wifi_home".into(),
        app_active: false,
    };
    let now = std::time::Instant::now();
    let (mut a, mut b) = (
        phobos_plugin_api::HeartbeatPolicyFactory::build(&f, now, &c),
        phobos_plugin_api::HeartbeatPolicyFactory::build(&f, now, &c),
    );
    let mut gaps = Vec::new();
    for _ in 0..20 {
        let ia = a.next_interval(now, &c).unwrap();
        a.on_ack(now, std::time::Duration::from_millis(50));
        let _ = b.next_interval(now, &c).unwrap();
        b.on_ack(now, std::time::Duration::from_millis(50));
        clock.advance(ia);
        gaps.push(ia.as_secs());
    }
    let mut want = vec![210u64; 8];
    want.extend([270; 6]);
    want.extend([330; 6]);
    assert_eq!(gaps, want);
    // The factory's table holds what the links wrote: the state they reached.
    let state = phobos_plugin_api::HeartbeatPolicyFactory::export_state(&f).unwrap();
    assert!(state.contains("wifi_home"), "{state}");
}

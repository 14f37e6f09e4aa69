//! Random event sequences keep the smart heartbeat within Mars's bounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use phobos_heartbeat::{ManualClock, SmartHeartbeat, SmartHeartbeatConfig};
use phobos_plugin_api::{HeartbeatContext, HeartbeatPolicyFactory, NetKind};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Event {
    Ack,
    Timeout,
    Late(u64),
    ToggleActive,
    Network(u8, bool),
    Disconnect,
    Import(String),
    WallJump(u32),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => Just(Event::Ack),
        1 => Just(Event::Timeout),
        1 => (0u64..4000).prop_map(Event::Late),
        1 => Just(Event::ToggleActive),
        1 => (0u8..4, any::<bool>()).prop_map(|(l, m)| Event::Network(l, m)),
        1 => Just(Event::Disconnect),
        1 => "(\\[[a-z]{1,3}\\]\n(curHeart|modifyTime|stable|failHeartCount)=[0-9]{0,12}\n){0,4}"
            .prop_map(Event::Import),
        1 => (0u32..2_000_000).prop_map(Event::WallJump),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn intervals_stay_within_210_to_580_s(events in proptest::collection::vec(event(), 0..300)) {
        let clock = ManualClock::at_unix_secs(1_700_000_000);
        let factory = SmartHeartbeat::with_clock(
            SmartHeartbeatConfig::default(),
            Arc::new(clock.clone()),
        ).unwrap();
        let mut now = Instant::now();
        let mut ctx = HeartbeatContext {
            net: NetKind::Mobile,
            net_label: "l0".into(),
            app_active: false,
        };
        let mut policy = factory.build(now, &ctx);
        for e in events {
            let interval = policy.next_interval(now, &ctx).expect("not forced off");
            prop_assert!(interval >= Duration::from_secs(210));
            prop_assert!(interval <= Duration::from_secs(580));
            now += interval;
            clock.advance(interval);
            match e {
                Event::Ack => policy.on_ack(now, Duration::from_millis(40)),
                Event::Timeout => {
                    policy.on_timeout(now);
                    policy = factory.build(now, &ctx);
                }
                Event::Late(s) => policy.on_fired_late(now, Duration::from_secs(s)),
                Event::ToggleActive => {
                    ctx.app_active = !ctx.app_active;
                    policy.on_network_change(now, &ctx);
                }
                Event::Network(l, mobile) => {
                    ctx.net_label = format!("l{l}");
                    ctx.net = if mobile { NetKind::Mobile } else { NetKind::Wifi };
                    policy.on_network_change(now, &ctx);
                }
                Event::Disconnect => {
                    policy.on_disconnect(now);
                    policy = factory.build(now, &ctx);
                }
                Event::Import(text) => {
                    let _ = factory.import_state(&text);
                }
                Event::WallJump(s) => clock.advance(Duration::from_secs(u64::from(s))),
            }
            if let Some(st) = factory.label_state(&ctx.net_label) {
                prop_assert!(st.cur_heart >= Duration::from_secs(210));
                prop_assert!(st.cur_heart <= Duration::from_secs(580));
            }
        }
        let text = factory.export_state().unwrap();
        prop_assert!(text.matches("modifyTime=").count() <= 20);
    }
}

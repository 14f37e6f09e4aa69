//! Property: every started task ends exactly once, whatever the network and server do.
//!
//! Random scripts mix task starts and cancels with faults: refused or silent connects, the
//! server closing mid-frame, malformed bytes, a stalled server, dropped heartbeat replies,
//! network changes and app state changes. After the script the network heals and the run
//! continues until everything settled. The harness panics on a second end for one task.

use std::time::Duration;

use phobos_plugin_api::{CmdId, NetKind, Seq};
use proptest::prelude::*;

use std::sync::Arc;

use phobos_plugin_api::{AuthCheck, AuthError};

use super::harness::{config_with, ms, secs, server_addr, Answer, Reach, Sim};
use crate::{LinkConfig, TaskSpec};

#[derive(Clone, Debug)]
enum Op {
    Wait(u32),
    Start {
        cmd: u32,
        retries: u32,
        total: Option<u64>,
        send_only: bool,
        extra_link: bool,
        needs_auth: bool,
    },
    Cancel(usize),
    ServerClose,
    Garbage,
    HalfFrame,
    Stall(bool),
    HeartbeatReplies(bool),
    Reach(u8),
    NetworkChange(bool),
    Foreground(bool),
    Redo,
    Reset,
    AuthAnswer(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..30_000).prop_map(Op::Wait),
        4 => (1u32..4, 0u32..3, proptest::option::of(1u64..200), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(cmd, retries, total, send_only, extra_link, needs_auth)| Op::Start {
                cmd,
                retries,
                total,
                send_only: send_only && cmd == 1,
                extra_link,
                needs_auth: needs_auth && cmd == 2,
            }),
        1 => (0u8..4).prop_map(Op::AuthAnswer),
        1 => (0usize..64).prop_map(Op::Cancel),
        1 => Just(Op::ServerClose),
        1 => Just(Op::Garbage),
        1 => Just(Op::HalfFrame),
        1 => any::<bool>().prop_map(Op::Stall),
        1 => any::<bool>().prop_map(Op::HeartbeatReplies),
        1 => (0u8..3).prop_map(Op::Reach),
        1 => any::<bool>().prop_map(Op::NetworkChange),
        1 => any::<bool>().prop_map(Op::Foreground),
        1 => Just(Op::Redo),
        1 => Just(Op::Reset),
    ]
}

fn run(ops: &[Op], seed: u64) {
    let cfg = config_with(&[server_addr(1), server_addr(2)])
        .link(LinkConfig::new("extra").addrs([server_addr(3)]))
        .auth(Arc::new(NeverAuthed))
        .seed(seed)
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    sim.loss = 0.05;
    sim.script.answer_by_cmd.insert(
        CmdId(3),
        Answer::Dribble {
            chunks: 3,
            every: secs(3),
        },
    );
    let mut started = Vec::new();
    for op in ops {
        match op {
            Op::Wait(ms_) => sim.run_for(ms(u64::from(*ms_))),
            Op::Start {
                cmd,
                retries,
                total,
                send_only,
                extra_link,
                needs_auth,
            } => {
                let mut spec = TaskSpec::new(CmdId(*cmd), vec![*cmd as u8; 40])
                    .with_retry_count(*retries)
                    .with_limits(true, false);
                if let Some(t) = total {
                    spec = spec.with_total_timeout(secs(*t));
                }
                if *send_only {
                    spec = spec.send_only();
                }
                if *extra_link {
                    spec = spec.with_link("extra");
                }
                if *needs_auth {
                    spec = spec.needs_auth();
                }
                started.push(sim.start(spec));
            }
            Op::Cancel(i) => {
                if let Some(&id) = started.get(i % started.len().max(1)) {
                    sim.engine.cancel_task(sim.now, id);
                    sim.drain();
                }
            }
            Op::ServerClose => {
                if let Some(&c) = sim.open_conns().first() {
                    sim.server_close(c);
                }
            }
            Op::Garbage => {
                if let Some(&c) = sim.open_conns().last() {
                    sim.server_send(c, vec![0xAB; 33]);
                }
            }
            Op::HalfFrame => {
                if let (Some(&c), Some(&id)) = (sim.open_conns().first(), started.last()) {
                    let frame = sim.frame(CmdId(1), Seq(id.0), &[1; 50]);
                    sim.server_send(c, frame[..30].to_vec());
                }
            }
            Op::Stall(on) => sim.script.answer = if *on { Answer::Never } else { Answer::Echo },
            Op::HeartbeatReplies(on) => sim.script.heartbeat_replies = *on,
            Op::Reach(r) => {
                let reach = [Reach::Accept, Reach::Refuse, Reach::Blackhole][usize::from(*r)];
                for a in 1..=3 {
                    sim.script.reach.insert(server_addr(a), reach);
                }
            }
            Op::NetworkChange(mobile) => {
                let (kind, label) = if *mobile {
                    (NetKind::Mobile, "mobile")
                } else {
                    (NetKind::Wifi, "wifi")
                };
                sim.engine.set_network(sim.now, kind, label);
                sim.drain();
            }
            Op::Foreground(fg) => sim.foreground(*fg),
            Op::Redo => {
                sim.engine.redo_tasks(sim.now);
                sim.drain();
            }
            Op::AuthAnswer(a) => {
                sim.auth_answer = match a {
                    0 => Some(Ok(())),
                    1 => Some(Err(AuthError::Transient("busy".into()))),
                    2 => Some(Err(AuthError::Rejected("no".into()))),
                    _ => None,
                };
            }
            Op::Reset => {
                sim.engine.reset(sim.now);
                sim.drain();
            }
        }
    }
    // Heal and settle: every budget is at most 200 s (+ zombie life within it).
    sim.script = Default::default();
    sim.loss = 0.0;
    sim.run_for(Duration::from_secs(30 * 60));
    for id in &started {
        assert!(sim.ends.contains_key(id), "{id} never ended");
    }
    assert_eq!(sim.ends.len(), started.len());
    assert_eq!(sim.engine.task_count(), 0);
    assert_eq!(sim.engine.zombie_count(), 0);
    let st = sim.engine.stats();
    assert_eq!(st.tasks_started as usize, started.len());
    assert_eq!(
        (st.tasks_succeeded + st.tasks_failed + st.tasks_canceled) as usize,
        started.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PHOBOS_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_started_task_ends_exactly_once(ops in proptest::collection::vec(op(), 1..60), seed in any::<u64>()) {
        run(&ops, seed);
    }
}

#[test]
fn a_dense_fault_script_settles() {
    let ops = vec![
        Op::Start {
            cmd: 1,
            retries: 2,
            total: Some(150),
            send_only: false,
            extra_link: false,
            needs_auth: false,
        },
        Op::Start {
            cmd: 2,
            retries: 0,
            total: None,
            send_only: false,
            extra_link: true,
            needs_auth: false,
        },
        Op::Wait(50),
        Op::Stall(true),
        Op::Start {
            cmd: 3,
            retries: 1,
            total: Some(30),
            send_only: false,
            extra_link: false,
            needs_auth: false,
        },
        Op::HalfFrame,
        Op::Wait(9_000),
        Op::Garbage,
        Op::Reach(2),
        Op::ServerClose,
        Op::Wait(20_000),
        Op::NetworkChange(true),
        Op::Cancel(1),
        Op::Reach(0),
        Op::HeartbeatReplies(false),
        Op::Wait(25_000),
        Op::Redo,
        Op::Start {
            cmd: 1,
            retries: 0,
            total: None,
            send_only: true,
            extra_link: false,
            needs_auth: false,
        },
        Op::Foreground(true),
        Op::Wait(29_000),
    ];
    run(&ops, 1);
}

/// An auth plugin that never considers the session authenticated on its own: gated tasks
/// depend entirely on the (scripted) `EnsureAuth` answers.
#[derive(Debug)]
struct NeverAuthed;

#[async_trait::async_trait]
impl AuthCheck for NeverAuthed {
    fn name(&self) -> &str {
        "never"
    }
    fn is_authed(&self, _host: &str) -> bool {
        false
    }
    async fn ensure_authed(&self, _host: &str) -> Result<(), AuthError> {
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PHOBOS_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    /// Whatever bytes the server sends (random, or frames with random heads), the engine
    /// neither panics nor loses a task.
    #[test]
    fn arbitrary_server_bytes_never_panic_or_lose_a_task(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..12),
        heads in proptest::collection::vec((any::<u32>(), any::<u32>(), 0usize..40), 0..8),
    ) {
        let mut sim = Sim::new();
        sim.script.answer = Answer::Never;
        let ids: Vec<_> = (0..4u8)
            .map(|i| sim.start(TaskSpec::new(CmdId(1), vec![i; 10]).with_retry_count(1)))
            .collect();
        sim.run_for(ms(100));
        for (cmd, seq, len) in heads {
            if let Some(&c) = sim.open_conns().first() {
                let frame = sim.frame(CmdId(cmd), Seq(seq), &vec![7; len]);
                sim.server_send(c, frame);
            }
        }
        for chunk in chunks {
            if let Some(&c) = sim.open_conns().first() {
                sim.server_send(c, chunk);
            }
            sim.run_for(ms(10));
        }
        sim.script = Default::default();
        sim.run_for(Duration::from_secs(600));
        for id in &ids {
            prop_assert!(sim.ends.contains_key(id));
        }
        prop_assert_eq!(sim.engine.task_count(), 0);
    }
}

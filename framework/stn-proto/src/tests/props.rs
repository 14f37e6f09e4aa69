//! Property: every started task ends exactly once, whatever the network and server do.
//!
//! Random scripts mix task starts and cancels with faults: refused or silent connects, the
//! server closing mid-frame, malformed bytes, a stalled server, dropped heartbeat replies,
//! network changes and app state changes. After the script the network heals and the run
//! continues until everything settled. The harness panics on a second end for one task.

use std::time::Duration;

use phobos_plugin_api::{CmdId, Seq};
use proptest::prelude::*;

use std::sync::Arc;

use super::faults::{any_fault, Fault, FlagAuth};
use super::harness::{config_with, ms, secs, server_addr, Answer, Sim};
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
    Fault(Fault),
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
        12 => any_fault().prop_map(Op::Fault),
    ]
}

fn run(ops: &[Op], seed: u64) {
    let cfg = config_with(&[server_addr(1), server_addr(2)])
        .link(LinkConfig::new("extra").addrs([server_addr(3)]))
        .auth(Arc::new(FlagAuth::never()))
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
            Op::Fault(fault) => fault.apply(&mut sim, &started),
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
    #![proptest_config(super::proptest_config(48))]

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
        Op::Fault(Fault::Stall(true)),
        Op::Start {
            cmd: 3,
            retries: 1,
            total: Some(30),
            send_only: false,
            extra_link: false,
            needs_auth: false,
        },
        Op::Fault(Fault::HalfFrame),
        Op::Wait(9_000),
        Op::Fault(Fault::Garbage),
        Op::Fault(Fault::Reach(2)),
        Op::Fault(Fault::ServerClose),
        Op::Wait(20_000),
        Op::Fault(Fault::NetworkChange(true)),
        Op::Fault(Fault::Cancel(1)),
        Op::Fault(Fault::Reach(0)),
        Op::Fault(Fault::HeartbeatReplies(false)),
        Op::Wait(25_000),
        Op::Fault(Fault::Redo),
        Op::Start {
            cmd: 1,
            retries: 0,
            total: None,
            send_only: true,
            extra_link: false,
            needs_auth: false,
        },
        Op::Fault(Fault::Foreground(true)),
        Op::Wait(29_000),
    ];
    run(&ops, 1);
}

proptest! {
    #![proptest_config(super::proptest_config(48))]

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

//! The batch lane (`engine/lane.rs`) changes the engine's bookkeeping, never what it does:
//! random scripts run through two engines, one with the lane and one without, must give
//! the same actions and events at the same instants.
//!
//! The scripts admit tasks in batches (most of them lane material, some not: send-only,
//! gated by auth, on another link, with other parameters) and mix in every fault the
//! simulated server and network can produce, so that members are demoted on every path:
//! a timer, a cancel, the link closing or sending garbage, responses in pieces, a response
//! the response check refuses, the frequency limit, network and app state changes, a reset.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::codec::PacketCodec;
use phobos_plugin_api::{AuthCheck, CmdId, TaskId};
use proptest::prelude::*;

use super::faults::{any_fault, once, Fault, FlagAuth};
use super::harness::{ms, secs, server_addr, Answer, MarsTwisted, Sim, Uplink};
use crate::{
    ChannelSelect, Config, ConnectProfile, LinkConfig, ResponseCheck, ResponseVerdict, TaskSpec,
};

#[derive(Clone, Debug)]
enum Op {
    Wait(u32),
    /// `n` tasks in one batch: `kind` picks their parameters per task (see `spec`). With
    /// `like`, the engine with the lane admits a batch of one kind whose parameters do not
    /// vary by task through [`Engine::queue_tasks_like`](crate::Engine::queue_tasks_like)
    /// (the other engine admits each spec).
    Batch {
        n: u8,
        kinds: Vec<u8>,
        body: u8,
        like: bool,
    },
    /// One task alone, its response arriving in three pieces.
    Dribble,
    /// The auth plugin says hosts are authenticated, or not (with [`Setup::flag_auth`]).
    AuthFlag(bool),
    Fault(Fault),
}

/// A script step: waits and batches, and faults at `faults` to 24 against them; with
/// `lasting`, faults that last until the script undoes them too.
fn op(faults: u32, lasting: bool) -> impl Strategy<Value = Op> {
    let kinds = proptest::collection::vec(prop_oneof![6 => 0u8..8, 1 => 8u8..16], 1..4);
    let fault = if lasting {
        any_fault().boxed()
    } else {
        once().boxed()
    };
    prop_oneof![
        10 => (1u32..20_000).prop_map(Op::Wait),
        14 => (1u8..40, kinds, any::<u8>(), any::<bool>())
            .prop_map(|(n, kinds, body, like)| Op::Batch { n, kinds, body, like }),
        faults => prop_oneof![
            8 => fault.prop_map(Op::Fault),
            1 => Just(Op::Dribble),
            2 => any::<bool>().prop_map(Op::AuthFlag),
        ],
    ]
}

/// The spec of task `i` of a batch: mostly lane material with a few parameter sets, some
/// not (send-only, needs auth, another link, a long poll, an extension).
fn spec(kind: u8, i: u8, body: u8) -> TaskSpec {
    // Bodies repeat within a batch now and then, for the frequency limit; a first byte of
    // 0xEE or 0xEF draws a refusal from the response check.
    let first = match body % 16 {
        0 => 0xEE,
        1 => 0xEF,
        _ => body,
    };
    let freq = kind % 5 == 0;
    // Tasks under the frequency limit all carry one body, so that scripts reach the limit
    // (105 identical bodies an hour).
    let payload = if freq {
        vec![0x42; 4]
    } else {
        vec![first, i % 3, body, 7]
    };
    let cmd = CmdId(1 + u32::from(kind % 3));
    let spec = TaskSpec::new(cmd, payload).with_limits(true, freq);
    match kind {
        // Every other task carries an extension, which members do not carry.
        6 if i % 2 == 1 => TaskSpec {
            extension: bytes::Bytes::from_static(b"ext"),
            ..spec
        },
        0..=6 => spec,
        // May go by the short link when the long one is down (the simulated network never
        // answers it: such tasks time out there).
        7 => spec
            .with_channel(ChannelSelect::Either)
            .with_short_link("/cgi", ["10.0.0.9"])
            .with_header("X-Kind", "either"),
        8 => spec.with_retry_count(u32::from(i % 3)),
        9 => spec.with_retry_count(2),
        // A budget the retry room shortens first-packet timeouts for.
        10 => spec.with_total_timeout(secs(14)),
        11 => spec.send_only(),
        12 => spec.needs_auth(),
        13 => spec.with_link("extra"),
        14 => spec.with_priority(i % 6),
        _ => spec.with_long_polling(secs(30)),
    }
}

/// Refuses responses whose body starts with 0xEE (retry) or 0xEF (end).
#[derive(Debug)]
struct Picky;

impl ResponseCheck for Picky {
    fn check(&self, _id: TaskId, _cmd: CmdId, body: &[u8]) -> ResponseVerdict {
        match body.first() {
            Some(0xEE) => ResponseVerdict::Retry { code: 5 },
            Some(0xEF) => ResponseVerdict::End { code: 6 },
            _ => ResponseVerdict::Accept,
        }
    }
}

/// How the compared engines are set up.
#[derive(Clone, Copy, Debug)]
struct Setup {
    seed: u64,
    /// With a response check that refuses some responses.
    picky: bool,
    /// Mars's connect profile: no stall probe, resend window or retry room, so per-task
    /// timeouts fire.
    classic: bool,
    /// Delays on the simulated network (5 % of deliveries).
    lossy: bool,
    /// The app starts in the foreground (where the weak-network detector works).
    foreground: bool,
    /// An auth plugin whose answer the script sets ([`Op::AuthFlag`]; it starts with
    /// "authenticated"), instead of one that never says so.
    flag_auth: bool,
    /// Frames due at one instant arrive in one read ([`Sim::coalesce_reads`]).
    coalesce: bool,
    /// The engines emit end batches ([`Engine::set_end_batches`](crate::Engine::set_end_batches)),
    /// which the sims record as the ends they stand for.
    end_batches: bool,
    /// The client's uplink takes 2 KiB a second in pieces of 16 bytes, so a batch's frames
    /// wait in the driver,
    /// which reports what it holds ([`Engine::handle_unsent`](crate::Engine::handle_unsent)).
    slow_uplink: bool,
}

impl Setup {
    /// Every option off (a background app, a lossless network, one read per frame).
    fn quiet(seed: u64) -> Setup {
        Setup {
            seed,
            picky: false,
            classic: false,
            lossy: false,
            foreground: false,
            flag_auth: false,
            coalesce: false,
            end_batches: false,
            slow_uplink: false,
        }
    }
}

impl Arbitrary for Setup {
    type Parameters = ();
    type Strategy = BoxedStrategy<Setup>;

    fn arbitrary_with(_: ()) -> Self::Strategy {
        let flags = (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        );
        (any::<u64>(), flags)
            .prop_map(
                |(
                    seed,
                    (picky, classic, lossy, foreground, flag_auth, coalesce, end_batches, slow),
                )| {
                    Setup {
                        seed,
                        picky,
                        classic,
                        lossy,
                        foreground,
                        flag_auth,
                        coalesce,
                        end_batches,
                        slow_uplink: slow,
                    }
                },
            )
            .boxed()
    }
}

/// A sim of `setup` (with the lane or without), and the flag of its auth plugin (set by
/// [`Op::AuthFlag`]; only a [`Setup::flag_auth`] plugin reads it).
fn sim(lane: bool, setup: Setup, t0: Instant) -> (Sim, Arc<AtomicBool>) {
    let flag = Arc::new(AtomicBool::new(true));
    let auth: Arc<dyn AuthCheck> = if setup.flag_auth {
        Arc::new(FlagAuth(flag.clone()))
    } else {
        Arc::new(FlagAuth::never())
    };
    let mut cfg = Config::builder(Arc::new(MarsTwisted::new(true, |seq| seq % 10 == 7)))
        .link(
            LinkConfig::new("default-longlink")
                .addrs([server_addr(1), server_addr(2)])
                .main(),
        )
        .link(LinkConfig::new("extra").addrs([server_addr(3)]))
        .auth(auth)
        .seed(setup.seed);
    if setup.picky {
        cfg = cfg.response_check(Arc::new(Picky));
    }
    if setup.classic {
        cfg = cfg.connect_profile(ConnectProfile::MarsClassic);
    }
    let mut sim = Sim::with_config_at(cfg.build().unwrap(), t0);
    sim.engine.set_batch_lane(lane);
    sim.engine.set_end_batches(setup.end_batches);
    sim.coalesce_reads = setup.coalesce;
    if setup.foreground {
        sim.foreground(true);
    }
    sim.loss = if setup.lossy { 0.05 } else { 0.0 };
    if setup.slow_uplink {
        sim.uplink = Some(Uplink {
            rate: 2048,
            piece: 16,
            stop_after: None,
            pause: None,
            report: true,
        });
    }
    sim.reseed(setup.seed);
    // A slow command (its tasks outlive other inputs and timers). Responses in pieces come
    // from `Op::Fault(Fault::HalfFrame)` and from `Op::Dribble` (one task alone in flight: the simulated
    // server would interleave the pieces with other responses).
    // Past the weak-network mark (5 s), within the first-packet timeout.
    sim.script
        .answer_by_cmd
        .insert(CmdId(3), Answer::Delay(ms(5_500)));
    // Responses longer than their requests, by a different length per task.
    sim.script.answer_by_cmd.insert(CmdId(2), Answer::Longer);
    (sim, flag)
}

/// Two sims of `setup` from the same instant, without the lane and with it (for tests
/// that drive both by hand).
fn sims(setup: Setup) -> (Sim, Sim) {
    let t0 = crate::tests::epoch::epoch();
    (sim(false, setup, t0).0, sim(true, setup, t0).0)
}

/// [`sims`] of a foreground app on a quiet network (seed `seed`).
fn foreground_sims(seed: u64) -> (Sim, Sim) {
    sims(Setup {
        foreground: true,
        ..Setup::quiet(seed)
    })
}

/// [`sims`] of a foreground app whose frames due at one instant arrive in one read, with
/// end batches on (seed `seed`).
fn burst_sims(seed: u64) -> (Sim, Sim) {
    sims(Setup {
        foreground: true,
        coalesce: true,
        end_batches: true,
        ..Setup::quiet(seed)
    })
}

/// The server answers command 5 after 800 ms: a batch of it stays in flight.
fn slow_command_5(sim: &mut Sim) {
    sim.script
        .answer_by_cmd
        .insert(CmdId(5), Answer::Delay(ms(800)));
}

/// Runs `ops` on `sim`; returns the ids started.
fn play((sim, flag): &mut (Sim, Arc<AtomicBool>), ops: &[Op]) -> Vec<TaskId> {
    let mut started = Vec::new();
    for op in ops {
        match op {
            Op::Wait(ms_) => sim.run_for(ms(u64::from(*ms_))),
            Op::Batch {
                n,
                kinds,
                body,
                like,
            } => {
                let alike = *like && kinds.len() == 1 && ![6, 8, 14].contains(&kinds[0]);
                if alike && sim.engine.lane_on() {
                    let params = spec(kinds[0], 0, *body);
                    let requests = (0..*n).map(|i| {
                        let task = spec(kinds[0], i, *body);
                        (task.cmd_id, task.body.to_vec())
                    });
                    started.extend(sim.start_batch_like(&params, requests));
                } else {
                    let specs =
                        (0..*n).map(|i| spec(kinds[usize::from(i) % kinds.len()], i, *body));
                    started.extend(sim.start_batch(specs));
                }
            }
            Op::AuthFlag(on) => flag.store(*on, Ordering::Relaxed),
            Op::Dribble => {
                // Whatever is in flight ends first (a minute covers every answer and retry).
                sim.run_until(Duration::from_secs(60), |s| s.engine.task_count() == 0);
                sim.script.answer_by_cmd.insert(
                    CmdId(9),
                    Answer::Dribble {
                        chunks: 3,
                        every: ms(700),
                    },
                );
                started.extend(sim.start_batch([TaskSpec::new(CmdId(9), vec![9; 30])]));
            }
            Op::Fault(fault) => fault.apply(sim, &started),
        }
    }
    sim.script = Default::default();
    sim.loss = 0.0;
    sim.run_for(Duration::from_secs(30 * 60));
    started
}

/// Every action and event as text, with its time.
fn log(sim: &Sim) -> (Vec<String>, Vec<String>) {
    let at = |t: std::time::Instant| t.duration_since(sim.t0).as_nanos();
    let actions = sim
        .actions
        .iter()
        .map(|(t, a)| format!("{} {a:?}", at(*t)))
        .collect();
    let events = sim
        .events
        .iter()
        .map(|(t, e)| format!("{} {e:?}", at(*t)))
        .collect();
    (actions, events)
}

/// Runs `ops` with and without the lane and compares everything; returns how much the
/// lane was used (so a test can check that it was used at all).
fn compare(ops: &[Op], setup: Setup) -> Used {
    compare_with(ops, setup, |_| {})
}

/// [`compare`] with `tweak` applied to both sims first.
fn compare_with(ops: &[Op], setup: Setup, tweak: impl Fn(&mut Sim)) -> Used {
    let t0 = crate::tests::epoch::epoch();
    let mut plain = sim(false, setup, t0);
    let mut laned = sim(true, setup, t0);
    tweak(&mut plain.0);
    tweak(&mut laned.0);
    let a = play(&mut plain, ops);
    let b = play(&mut laned, ops);
    let (plain, laned) = (plain.0, laned.0);
    assert_eq!(a, b);
    let (pa, pe) = log(&plain);
    let (la, le) = log(&laned);
    for (i, (x, y)) in pa.iter().zip(&la).enumerate() {
        assert_eq!(x, y, "action {i} differs");
    }
    assert_eq!(pa.len(), la.len(), "action counts differ");
    for (i, (x, y)) in pe.iter().zip(&le).enumerate() {
        assert_eq!(x, y, "event {i} differs");
    }
    assert_eq!(pe.len(), le.len(), "event counts differ");
    assert_eq!(
        format!("{:?}", plain.engine.stats()),
        format!("{:?}", laned.engine.stats())
    );
    // What the ends taught the estimator, sample by sample (a state that no action shows
    // yet may show later).
    assert_eq!(
        plain.engine.estimator_state(),
        laned.engine.estimator_state(),
        "estimator differs"
    );
    // What the ends taught the address ranking (no action shows it until a later connect).
    assert_eq!(
        plain.engine.ranking_state(plain.now, 0),
        laned.engine.ranking_state(laned.now, 0),
        "ranking differs"
    );
    for id in &a {
        assert!(laned.ends.contains_key(id), "{id} never ended");
        assert_ne!(id.0 % 10, 7, "{id} is reserved");
    }
    assert_eq!(laned.engine.task_count(), 0);
    // With every task ended the lane holds nothing, and its timer is off: both engines wait
    // for the same next deadline (a timer the lane left armed would wake the driver).
    assert_eq!(
        plain.engine.poll_timeout(),
        laned.engine.poll_timeout(),
        "next deadline differs"
    );
    assert_eq!(plain.end_batches, 0, "end batches without the lane");
    if !setup.end_batches {
        assert_eq!(laned.end_batches, 0, "end batches not asked for");
    }
    Used {
        lane_ended: laned.engine.lane_ended(),
        end_batches: laned.end_batches,
    }
}

/// How much of the lane a comparison used.
#[derive(Debug)]
struct Used {
    /// Tasks the lane ended itself.
    lane_ended: u64,
    /// End batches it emitted.
    end_batches: u64,
}

/// Prints how much of the lane a run used, when `PHOBOS_LANE_REPORT` is set.
fn report(used: &Used) {
    if std::env::var_os("PHOBOS_LANE_REPORT").is_some() {
        eprintln!("lane used: {used:?}");
    }
}

proptest! {
    #![proptest_config(super::proptest_config(64))]

    /// Faults as often as batches.
    #[test]
    fn the_lane_changes_no_action_and_no_event(
        ops in proptest::collection::vec(op(14, true), 1..50),
        setup in any::<Setup>(),
    ) {
        report(&compare(&ops, setup));
    }

    /// Rare faults that pass, so most batches find the link up and take the lane, and the
    /// faults that come find members to demote.
    #[test]
    fn the_lane_changes_nothing_when_faults_are_rare(
        ops in proptest::collection::vec(op(3, false), 1..50),
        setup in any::<Setup>(),
    ) {
        report(&compare(&ops, setup));
    }

    /// Reads of many responses and end batches: the batches stand for exactly the ends the
    /// engine without the lane emits.
    #[test]
    fn end_batches_change_no_action_and_no_event(
        ops in proptest::collection::vec(op(6, false), 1..50),
        setup in any::<Setup>(),
    ) {
        let setup = Setup { coalesce: true, end_batches: true, lossy: false, ..setup };
        report(&compare(&ops, setup));
    }
}

/// Batches on a healthy link end in the lane: the comparison above is not vacuous.
#[test]
fn a_healthy_link_ends_batches_in_the_lane() {
    let batch = |n, body, like| Op::Batch {
        n,
        kinds: if like { vec![4] } else { vec![3, 4, 1] },
        body,
        like,
    };
    let ops = [
        batch(5, 2, false),
        Op::Wait(2_000),
        batch(30, 3, false),
        Op::Wait(1_000),
        batch(30, 4, true),
        Op::Wait(5_000),
    ];
    let setup = Setup {
        foreground: true,
        ..Setup::quiet(9)
    };
    let used = compare(&ops, setup);
    assert!(used.lane_ended >= 60, "{used:?}");
    // Reads of many responses, ended in batches.
    let setup = Setup {
        coalesce: true,
        end_batches: true,
        ..setup
    };
    let used = compare(&ops, setup);
    assert!(used.lane_ended >= 60 && used.end_batches >= 2, "{used:?}");
}

/// Two groups answered in one read (the first group's command waits 300 ms at the server,
/// the second group is sent just before its answers leave): two end batches, each with its
/// own group's profile, as the engine without the lane ends the tasks.
#[test]
fn two_groups_answered_in_one_read_end_in_two_batches() {
    let batch = |n, kind, body| Op::Batch {
        n,
        kinds: vec![kind],
        body,
        like: true,
    };
    let ops = [
        // Connects the link.
        batch(2, 4, 1),
        Op::Wait(1_000),
        // Command 1: answered 300 ms after it reaches the server, 340 ms after it left.
        batch(5, 3, 3),
        Op::Wait(295),
        // Command 2: answered 5 ms after it reaches the server, 45 ms after it left, with
        // responses of varying length.
        batch(5, 4, 4),
        Op::Wait(2_000),
    ];
    let setup = Setup {
        foreground: true,
        coalesce: true,
        end_batches: true,
        ..Setup::quiet(17)
    };
    let used = compare_with(&ops, setup, |sim| {
        sim.script
            .answer_by_cmd
            .insert(CmdId(1), Answer::Delay(ms(300)));
    });
    assert_eq!((used.lane_ended, used.end_batches), (10, 2), "{used:?}");
}

/// A dense script with a fault of each kind while batches are in flight.
#[test]
fn a_dense_fault_script_gives_the_same_run() {
    let batch = |n, kinds: &[u8], body| Op::Batch {
        n,
        kinds: kinds.to_vec(),
        body,
        like: true,
    };
    let ops = vec![
        batch(8, &[2], 3),
        Op::Wait(10),
        batch(20, &[1, 2, 11], 16),
        Op::Wait(100),
        batch(10, &[2, 12, 3], 17),
        Op::Fault(Fault::HalfFrame),
        Op::Wait(300),
        batch(12, &[0, 5], 5),
        Op::Fault(Fault::Stall(true)),
        batch(12, &[4, 10], 6),
        Op::Wait(9_000),
        Op::Fault(Fault::Cancel(3)),
        Op::Fault(Fault::Garbage),
        Op::Wait(3_000),
        batch(6, &[3, 13], 8),
        Op::Fault(Fault::ServerClose),
        Op::Fault(Fault::Stall(false)),
        Op::Wait(2_000),
        batch(9, &[2, 14], 9),
        Op::Fault(Fault::NetworkChange(true)),
        batch(9, &[2], 10),
        Op::Wait(1_000),
        Op::Fault(Fault::Foreground(false)),
        batch(4, &[2], 11),
        Op::Fault(Fault::Redo),
        batch(4, &[2], 12),
        Op::Wait(500),
        Op::Fault(Fault::Reset),
        Op::Wait(20_000),
    ];
    for (picky, classic, slow_uplink) in [
        (false, false, false),
        (true, false, false),
        (false, true, false),
        (true, true, false),
        (false, false, true),
        (true, true, true),
    ] {
        let setup = Setup {
            seed: 3,
            picky,
            classic,
            lossy: true,
            foreground: true,
            flag_auth: classic,
            coalesce: picky,
            end_batches: picky || classic,
            slow_uplink,
        };
        compare(&ops, setup);
    }
}

/// Three rounds, 500 ms apart, of a batch with the bodies `bodies(round)` (command 1): as
/// one spec each through an engine without the lane, and through `start_like` through one
/// with it. Both act and end alike; gives back the one with the lane.
fn like_rounds<I>(setup: Setup, bodies: impl Fn(u8) -> I) -> Sim
where
    I: Iterator<Item = Vec<u8>>,
{
    let (mut plain, mut laned) = sims(setup);
    let params = TaskSpec::new(CmdId(1), Vec::new());
    for round in 0..3u8 {
        let specs = bodies(round).map(|b| TaskSpec::new(CmdId(1), b));
        let a = plain.start_batch(specs);
        let b = laned.start_batch_like(&params, bodies(round).map(|b| (CmdId(1), b)));
        assert_eq!(a, b);
        plain.run_for(ms(500));
        laned.run_for(ms(500));
    }
    assert_eq!(log(&plain), log(&laned));
    laned
}

/// A batch of like tasks with a body too large in the middle: that task ends at admission
/// (as a spec of its own would), the others go on in the lane.
#[test]
fn a_body_too_large_in_a_like_batch_ends_only_its_task() {
    let setup = Setup::quiet(5);
    let max = MarsCodec::default().max_frame_len();
    let bodies =
        |round: u8| (0..6u8).map(move |i| if i == 3 { vec![1; max] } else { vec![round, i] });
    let laned = like_rounds(setup, bodies);
    assert_eq!(laned.engine.lane_ended(), 10, "rounds 2 and 3 in the lane");
    let too_large = laned
        .ends
        .values()
        .filter(|(_, end)| {
            matches!(
                end.outcome,
                Err(crate::TaskError::Param(
                    crate::ParamError::BodyTooLarge { .. }
                ))
            )
        })
        .count();
    assert_eq!(too_large, 3);
}

/// Responses the check refuses among accepted ones, all in one read: each is judged (and
/// ends its task with the check's verdict) though the accepted ones around it end together,
/// as the engine without the lane ends them.
#[test]
fn a_refused_response_among_ends_taken_together_is_judged() {
    let setup = Setup {
        picky: true,
        coalesce: true,
        end_batches: true,
        foreground: true,
        ..Setup::quiet(7)
    };
    // Task 5 of each round draws an end from the check (0xEF), the others are accepted.
    let bodies = |round: u8| {
        (0..8u8).map(move |i| {
            if i == 5 {
                vec![0xEF, round]
            } else {
                vec![round, i]
            }
        })
    };
    let laned = like_rounds(setup, bodies);
    assert!(laned.end_batches >= 2, "accepted ends taken together");
    let refused = laned
        .ends
        .values()
        .filter(|(_, end)| end.outcome.is_err())
        .count();
    assert_eq!(refused, 3, "one per round");
}

/// Task ids wrapping around while batches are in the lane: ids still held by members are
/// skipped as ids of regular tasks are. (A group's ids run in one range, so the batches
/// that meet the wrap or ids held across it go the regular way; the batch after them takes
/// the lane again.)
#[test]
fn ids_wrap_around_with_members_in_flight_as_without() {
    let (mut plain, mut laned) = foreground_sims(11);
    // A slow command keeps the first batch in flight while the ids wrap under the second.
    for s in [&mut plain, &mut laned] {
        slow_command_5(s);
    }
    let first = |i: u8| TaskSpec::new(CmdId(5), vec![i; 3]);
    let second = |i: u8| TaskSpec::new(CmdId(1), vec![i; 5]);
    // Connected, then near the wrap.
    for s in [&mut plain, &mut laned] {
        s.start_batch((0..2).map(first));
        s.run_for(ms(1_000));
        // Ids are used again after the wrap; the harness checks one end per id.
        s.ends.clear();
        s.engine.set_next_task_id(crate::engine::TASK_ID_WRAP - 20);
    }
    for s in [&mut plain, &mut laned] {
        s.start_batch((0..30).map(first));
        s.run_for(ms(100));
        s.engine.set_next_task_id(crate::engine::TASK_ID_WRAP - 25);
        s.start_batch((0..30).map(second));
        s.run_for(ms(100));
        s.start_batch((0..30).map(second));
        s.run_for(ms(5_000));
    }
    assert_eq!(log(&plain), log(&laned));
    assert!(
        laned.engine.lane_ended() >= 30,
        "{}",
        laned.engine.lane_ended()
    );
    assert_eq!(laned.ends.len(), 90);
    assert!(laned.ends.values().all(|(_, end)| end.outcome.is_ok()));
}

/// Tasks of another link admitted between a group's members take ids inside the group's
/// range: they are holes in it, found the regular way, while the members around them still
/// end in the lane; more ids between two members than a group leaves as holes end the
/// group's growth (the next task goes the regular way, and the group with it).
#[test]
fn tasks_between_members_leave_holes_and_the_group_stays_in_the_lane() {
    let setup = Setup {
        foreground: true,
        ..Setup::quiet(23)
    };
    let (mut plain, mut laned) = sims(setup);
    let main = |i: u8| TaskSpec::new(CmdId(1), vec![i; 4]);
    let extra = |i: u8| TaskSpec::new(CmdId(2), vec![i; 6]).with_link("extra");
    for s in [&mut plain, &mut laned] {
        // Connects both links.
        s.start_batch([main(0), extra(0)]);
        s.run_for(ms(1_000));
        // Members with one, then two tasks of the other link between them.
        s.start_batch([
            main(1),
            extra(1),
            main(2),
            extra(2),
            extra(3),
            main(3),
            main(4),
        ]);
        s.run_for(ms(1_000));
    }
    assert_eq!(log(&plain), log(&laned));
    // (The first batch finds the links down: it goes the regular way.)
    assert_eq!(laned.engine.lane_ended(), 4, "the four members");
    assert_eq!(laned.ends.len(), 9);
    assert!(laned.ends.values().all(|(_, end)| end.outcome.is_ok()));

    // Past the gap a group may leave: the task after it is admitted the regular way, which
    // demotes its link's group (a regular task waits ahead of it).
    let (mut plain, mut laned) = sims(setup);
    for s in [&mut plain, &mut laned] {
        s.start_batch([main(0), extra(0)]);
        s.run_for(ms(1_000));
        let far = std::iter::repeat_n(extra(4), 80);
        s.start_batch(std::iter::once(main(5)).chain(far).chain([main(6)]));
        s.run_for(ms(1_000));
    }
    assert_eq!(log(&plain), log(&laned));
    assert_eq!(laned.engine.lane_ended(), 0, "the group was demoted");
    assert_eq!(laned.ends.len(), 84);
}

/// After ids wrapped, new tasks get the ids of a held group's members that ended, as they
/// would without the lane, but no group opens inside the older group's range (its members
/// would be looked up in the new one): those tasks go the regular way.
#[test]
fn after_a_wrap_no_group_opens_inside_a_held_groups_range() {
    let (mut plain, mut laned) = foreground_sims(29);
    for s in [&mut plain, &mut laned] {
        slow_command_5(s);
    }
    // Fast and slow commands in turn: the fast ones' members end, the group stays.
    let mixed = |i: u8| TaskSpec::new(CmdId(if i % 2 == 0 { 1 } else { 5 }), vec![i; 3]);
    let ids: Vec<Vec<TaskId>> = [&mut plain, &mut laned]
        .into_iter()
        .map(|s| {
            s.start_batch([TaskSpec::new(CmdId(1), vec![0; 3])]);
            s.run_for(ms(1_000));
            let ids = s.start_batch((0..10).map(mixed));
            s.run_for(ms(100));
            // The ids wrapped, and the next one is that of an ended member.
            s.ends.clear();
            s.engine.set_next_task_id(ids[2].0);
            let later = s.start_batch((0..6).map(|i| TaskSpec::new(CmdId(1), vec![i; 4])));
            s.run_for(ms(2_000));
            later
        })
        .collect();
    assert_eq!(log(&plain), log(&laned));
    assert_eq!(ids[0], ids[1]);
    assert_eq!(
        laned.ends.len(),
        5 + 6,
        "the slow members and the later tasks"
    );
    assert!(laned.ends.values().all(|(_, end)| end.outcome.is_ok()));
    assert_eq!(laned.engine.lane_ended(), 10, "the members");
}

/// A run that takes a link's last running task leaves the link as the regular path does:
/// with nothing owed, no stall probe stays armed, so both engines wait for the same next
/// deadline right after the read.
#[test]
fn a_run_that_ends_the_last_running_task_leaves_no_stall_probe() {
    let (mut plain, mut laned) = burst_sims(31);
    for s in [&mut plain, &mut laned] {
        s.start_batch([TaskSpec::new(CmdId(1), vec![0; 3])]);
        s.run_for(ms(1_000));
        s.start_batch((0..6).map(|i| TaskSpec::new(CmdId(1), vec![i; 4])));
    }
    // Run both until the batch's ends are in: all six answered in one read.
    for s in [&mut plain, &mut laned] {
        assert!(
            s.run_until(ms(1_000), |s| s.ends.len() == 7),
            "the batch ends"
        );
    }
    assert_eq!(log(&plain), log(&laned));
    assert_eq!(laned.engine.lane_ended(), 6);
    assert_eq!(laned.end_batches, 1);
    assert_eq!(plain.engine.poll_timeout(), laned.engine.poll_timeout());
}

/// Large responses within a run are the estimator's mid-size samples, as on the regular
/// path (only small ones may be recorded together): the network turns excellent, and the
/// next passes' first-packet timeouts show it, alike with and without the lane.
#[test]
fn large_responses_in_a_run_are_sampled_as_large() {
    let (mut plain, mut laned) = burst_sims(37);
    let spec = |i: u8| {
        // Large in the middle of the run only (the first two frames and the last go other
        // ways), so the first large sample is one of the run's.
        let len = if i % 3 == 1 && i > 1 { 2_000 } else { 100 };
        TaskSpec::new(CmdId(1), vec![i; len])
    };
    for s in [&mut plain, &mut laned] {
        s.start_batch([spec(0)]);
        s.run_for(ms(1_000));
        for _ in 0..3 {
            s.start_batch((0..12).map(spec));
            s.run_for(ms(1_000));
        }
    }
    assert_eq!(log(&plain), log(&laned));
    assert_eq!(
        plain.engine.estimator_state(),
        laned.engine.estimator_state()
    );
    assert!(
        laned.engine.lane_ended() >= 30,
        "{}",
        laned.engine.lane_ended()
    );
    assert_eq!(
        format!("{:?}", laned.engine.net_quality()),
        "Excellent",
        "large fast exchanges among small ones"
    );
}

/// A foreground app's engine, with the lane on or off, whose link is up (a first task was
/// answered on it).
fn connected_sim(lane: bool) -> Sim {
    let mut sim = Sim::new();
    sim.engine.set_batch_lane(lane);
    sim.foreground(true);
    let first = sim.start(TaskSpec::new(CmdId(1), &b"a"[..]));
    sim.run_until_end(first, secs(5));
    sim
}

/// Command 0 never takes the long link (§3.2): in a batch after a task that opened a group
/// on the connected link, or among like tasks, it is refused as it is alone, not framed into
/// the group with command 0.
#[test]
fn a_command_zero_task_in_a_batch_is_refused_as_it_is_alone() {
    use crate::{LocalError, TaskError};
    // The middle one of three (commands 1, 0, 1) is refused; the others are answered.
    let only_the_middle_refused = |sim: &Sim, ids: &[TaskId], what: &str| {
        let outcome = |i: usize| &sim.ends[&ids[i]].1.outcome;
        assert!(
            matches!(outcome(1), Err(TaskError::Local(LocalError::NoChannel))),
            "{what}: {:?}",
            outcome(1)
        );
        assert!(outcome(0).is_ok() && outcome(2).is_ok(), "{what}");
    };
    for lane in [false, true] {
        let mut sim = connected_sim(lane);
        let ids = sim.start_batch([
            TaskSpec::new(CmdId(1), &b"b"[..]),
            TaskSpec::new(CmdId(0), &b"c"[..]),
            TaskSpec::new(CmdId(1), &b"d"[..]),
        ]);
        sim.run_for(secs(1));
        only_the_middle_refused(&sim, &ids, &format!("lane {lane}"));
        let params = TaskSpec::new(CmdId(1), Vec::new());
        let like = [
            (CmdId(1), vec![1]),
            (CmdId(0), vec![2]),
            (CmdId(1), vec![3]),
        ];
        let ids = sim.start_batch_like(&params, like);
        sim.run_for(secs(1));
        only_the_middle_refused(&sim, &ids, &format!("lane {lane}, like"));
    }
}

/// `has_task` (Mars's `HasTask`) sees a task in flight whether or not the lane carries it.
#[test]
fn has_task_sees_a_task_in_flight_in_the_lane_too() {
    for lane in [false, true] {
        let mut sim = connected_sim(lane);
        sim.script.answer = Answer::Delay(secs(1));
        let id = sim.start(TaskSpec::new(CmdId(1), &b"b"[..]));
        assert_eq!(sim.engine.task_count(), 1);
        assert!(sim.engine.has_task(id), "lane {lane}");
        sim.run_until_end(id, secs(5));
        assert!(!sim.engine.has_task(id), "lane {lane}: ended");
    }
}

/// A member's end gives the tasks queued behind its link a dispatch pass, as a regular
/// task's end does: tasks held for auth leave at the batch's answers once the plugin says
/// the session is authenticated (the app logged in on its own), not at the next timer (the
/// 30 s auth limit). Each engine sends them at the same instant.
#[test]
fn a_members_end_gives_the_tasks_held_for_auth_a_pass() {
    let sent = |sim: &Sim, id: TaskId| {
        sim.events
            .iter()
            .find(|(_, e)| matches!(e, crate::Event::TaskSent { id: i, .. } if *i == id))
            .map(|(t, _)| *t)
    };
    let t0 = crate::tests::epoch::epoch();
    let mut when = Vec::new();
    for lane in [false, true] {
        let setup = Setup {
            flag_auth: true,
            ..Setup::quiet(1)
        };
        let (mut sim, flag) = sim(lane, setup, t0);
        sim.auth_answer = None;
        sim.foreground(true);
        let first = sim.start(TaskSpec::new(CmdId(1), &b"a"[..]));
        sim.run_until_end(first, secs(5));
        let batch = sim.start_batch((0..3u8).map(|i| TaskSpec::new(CmdId(1), vec![i])));
        flag.store(false, Ordering::Relaxed);
        let held = sim.start_batch((0..2u8).map(|i| TaskSpec::new(CmdId(2), vec![i]).needs_auth()));
        sim.run_for(ms(1));
        assert!(
            held.iter().all(|&id| sent(&sim, id).is_none()),
            "lane {lane}: held"
        );
        flag.store(true, Ordering::Relaxed);
        sim.run_for(ms(500));
        assert!(
            batch.iter().all(|id| sim.ends.contains_key(id)),
            "lane {lane}"
        );
        let at: Vec<_> = held.iter().map(|&id| sent(&sim, id)).collect();
        assert!(
            at.iter().all(Option::is_some),
            "lane {lane}: still held: {at:?}"
        );
        when.push(at);
    }
    assert_eq!(when[0], when[1]);
}

/// A task admitted at a later instant than the waiting group's does not join it: it has a
/// budget of its own (its profile's admission, its total deadline), as on the regular path.
#[test]
fn a_task_admitted_at_a_later_instant_does_not_join_the_waiting_group() {
    let t0 = crate::tests::epoch::epoch();
    let mut ends = Vec::new();
    for lane in [false, true] {
        let (mut sim, _) = sim(lane, Setup::quiet(2), t0);
        sim.foreground(true);
        let first = sim.start(TaskSpec::new(CmdId(1), &b"a"[..]));
        sim.run_until_end(first, secs(5));
        let a = sim
            .engine
            .queue_task(sim.now, TaskSpec::new(CmdId(1), &b"x"[..]));
        let later = sim.now + ms(300);
        let b = sim
            .engine
            .queue_task(later, TaskSpec::new(CmdId(1), &b"y"[..]));
        sim.engine.send_queued(later);
        sim.drain();
        let (_, end_a) = sim.run_until_end(a, secs(5));
        let (_, end_b) = sim.run_until_end(b, secs(5));
        assert_eq!(end_b.profile.queued_at, later, "lane {lane}");
        ends.push((
            end_a.profile.queued_at,
            end_b.profile.queued_at,
            end_b.elapsed,
        ));
    }
    assert_eq!(ends[0], ends[1]);
}

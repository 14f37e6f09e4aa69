//! Zombie tasks (§14): failed tasks with a total timeout are kept and retried later.

use std::time::Duration;

use phobos_plugin_api::CmdId;

use super::harness::{secs, server_addr, Reach, Sim};
use crate::{Action, Event, TaskError, TaskSpec, TimeoutLevel};

fn zombie_times(sim: &Sim) -> Vec<Duration> {
    sim.event_times(|e| matches!(e, Event::TaskZombie { .. }))
}

/// §14's example: `total_timeout = 120 s`, server unreachable. Exact timeline (foreground):
/// cycles fail at 10 s and 21 s (the task's two attempts) → zombie with 99 s left; restarted
/// at 81 s with no retries and a 20 s budget; its cycle fails at 91 s → zombie again with
/// 29 s left; the budget ends at 120 s.
#[test]
fn unreachable_server_task_lives_as_a_zombie_until_its_total_timeout() {
    let mut sim = Sim::new();
    sim.script.reach.insert(server_addr(1), Reach::Blackhole);
    sim.foreground(true);
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_total_timeout(secs(120)));
    let (at, end) = sim.run_until_end(id, secs(300));
    assert_eq!(at, secs(120));
    assert_eq!(end.outcome, Err(TaskError::Timeout(TimeoutLevel::Total)));
    assert_eq!(end.profile.zombie_rounds, 2);
    assert_eq!(zombie_times(&sim), vec![secs(21), secs(91)]);
    assert!(!sim.engine.has_task(id));
}

#[test]
fn a_zombie_restarts_when_the_main_link_connects_and_succeeds() {
    let mut sim = Sim::new();
    sim.script.reach.insert(server_addr(1), Reach::Blackhole);
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_total_timeout(secs(300)));
    sim.run_for(secs(45));
    assert_eq!(zombie_times(&sim), vec![secs(40)]);
    assert!(sim.engine.has_task(id));
    assert_eq!(sim.engine.zombie_count(), 1);
    sim.script.reach.insert(server_addr(1), Reach::Accept);
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    let (at, end) = sim.run_until_end(id, secs(10));
    assert!(end.outcome.is_ok());
    assert_eq!(at, secs(45) + Duration::from_millis(85));
    assert_eq!(end.profile.zombie_rounds, 1);
}

#[test]
fn zombie_restart_waits_sixty_seconds_of_quiet_after_the_last_start() {
    // No dial hedging: the address comes back in the middle of the cycle started at 70 s,
    // and a hedge would connect (and restart the zombie) right then.
    let mut sim = Sim::without_hedges();
    sim.script.reach.insert(server_addr(1), Reach::Blackhole);
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_total_timeout(secs(300)));
    sim.run_for(secs(70));
    // A task started (and canceled) at 70 s postpones the restart from 100 s to 130 s.
    let other = sim.start(TaskSpec::new(CmdId(2), &b"y"[..]));
    assert!(sim.engine.cancel_task(sim.now, other));
    sim.drain();
    sim.script.reach.insert(server_addr(1), Reach::Accept);
    let (at, end) = sim.run_until_end(id, secs(200));
    assert!(end.outcome.is_ok());
    let connects = sim.action_times(|a| matches!(a, Action::Connect { .. }));
    assert!(connects.contains(&secs(130)), "{connects:?}");
    assert_eq!(at, secs(130) + Duration::from_millis(85));
}

#[test]
fn no_zombie_without_a_total_timeout_or_when_network_sensitive() {
    let mut sim = Sim::new();
    sim.script.reach.insert(server_addr(1), Reach::Blackhole);
    let plain = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]));
    let sensitive = sim.start(
        TaskSpec::new(CmdId(1), &b"y"[..])
            .with_total_timeout(secs(300))
            .network_sensitive(),
    );
    sim.run_for(secs(100));
    assert!(sim.ends.contains_key(&plain));
    assert!(sim.ends.contains_key(&sensitive));
    assert!(zombie_times(&sim).is_empty());
}

#[test]
fn canceling_a_zombie_ends_it_once() {
    let mut sim = Sim::new();
    sim.script.reach.insert(server_addr(1), Reach::Blackhole);
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_total_timeout(secs(300)));
    sim.run_for(secs(45));
    assert!(sim.engine.cancel_task(sim.now, id));
    sim.drain();
    assert_eq!(sim.ends[&id].1.outcome, Err(TaskError::Canceled));
    sim.run_for(secs(600));
    assert_eq!(sim.engine.zombie_count(), 0);
}

#[derive(Debug)]
struct RefuseFirst(std::sync::atomic::AtomicU32);

impl crate::ResponseCheck for RefuseFirst {
    fn check(&self, _id: crate::TaskId, _cmd: CmdId, _body: &[u8]) -> crate::ResponseVerdict {
        use std::sync::atomic::Ordering;
        if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
            crate::ResponseVerdict::Retry { code: -1 }
        } else {
            crate::ResponseVerdict::Accept
        }
    }
}

/// §14: only a TaskEnd verdict ends a task for good; one whose responses were refused with
/// the default fail handle until its retries ran out is kept as a zombie, and its restart
/// can still succeed.
#[test]
fn a_task_whose_responses_were_refused_lives_on_as_a_zombie() {
    let cfg = super::harness::config_with(&[server_addr(1)])
        .response_check(std::sync::Arc::new(RefuseFirst(0.into())))
        .build()
        .unwrap();
    let mut sim = Sim::with_config(cfg);
    sim.foreground(true);
    let id = sim.start(TaskSpec::new(CmdId(1), &b"x"[..]).with_total_timeout(secs(300)));
    let (_, end) = sim.run_until_end(id, secs(300));
    assert_eq!(zombie_times(&sim).len(), 1);
    assert!(end.outcome.is_ok(), "{:?}", end.outcome);
    assert_eq!(end.profile.zombie_rounds, 1);
}

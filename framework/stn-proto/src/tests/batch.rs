//! Admitting several tasks with one dispatch pass (`queue_task` + `send_queued`).

use std::time::Duration;

use bytes::Bytes;
use phobos_plugin_api::{CmdId, Seq, TaskId};

use super::harness::{secs, Sim};
use crate::{Action, Event, TaskProfile, TaskSpec};

fn connected() -> Sim {
    let mut sim = Sim::new();
    sim.engine.connect_link(sim.now, "default-longlink");
    sim.drain();
    assert!(sim.run_until(secs(5), |s| s.engine.is_connected("default-longlink")));
    sim
}

fn specs() -> Vec<TaskSpec> {
    [5u8, 3, 0, 3]
        .iter()
        .enumerate()
        .map(|(i, &p)| TaskSpec::new(CmdId(10 + i as u32), vec![i as u8; 8]).with_priority(p))
        .collect()
}

/// The `TaskSent` events since `from`, as (task, first-packet timeout).
fn sent(sim: &Sim, from: usize) -> Vec<(TaskId, Duration)> {
    sim.events[from..]
        .iter()
        .filter_map(|(_, e)| match e {
            Event::TaskSent {
                id,
                first_packet_timeout,
                ..
            } => Some((*id, *first_packet_timeout)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_batch_goes_out_in_one_write_in_priority_order_and_every_task_ends_once() {
    let mut sim = connected();
    let (actions, events) = (sim.actions.len(), sim.events.len());
    let ids: Vec<TaskId> = specs()
        .into_iter()
        .map(|s| sim.engine.queue_task(sim.now, s))
        .collect();
    // Nothing leaves before the pass.
    assert!(sim.engine.poll_action().is_none());
    sim.engine.send_queued(sim.now);
    sim.drain();
    let sends: Vec<usize> = sim.actions[actions..]
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Send { bytes, .. } => Some(bytes.len()),
            _ => None,
        })
        .collect();
    // Four 8-byte bodies in 20-byte Mars headers, in one write.
    assert_eq!(sends, vec![4 * 28]);
    let order: Vec<TaskId> = sent(&sim, events).into_iter().map(|s| s.0).collect();
    assert_eq!(order, vec![ids[2], ids[1], ids[3], ids[0]]);
    for id in ids {
        let (_, end) = sim.run_until_end(id, secs(5));
        assert!(end.outcome.is_ok());
    }
    assert_eq!(sim.engine.task_count(), 0);
    assert_eq!(
        sim.engine.poll_timeout(),
        sim.engine.next_timer().map(|t| t.0)
    );
}

#[test]
fn a_batch_chooses_the_same_timeouts_as_tasks_started_one_by_one() {
    let mut one_by_one = connected();
    let from = one_by_one.events.len();
    let mut by_priority = specs();
    by_priority.sort_by_key(|s| s.priority);
    for s in by_priority {
        one_by_one.start(s);
    }
    let mut batch = connected();
    let from_batch = batch.events.len();
    for s in specs() {
        batch.engine.queue_task(batch.now, s);
    }
    batch.engine.send_queued(batch.now);
    batch.drain();
    let a: Vec<Duration> = sent(&one_by_one, from).into_iter().map(|s| s.1).collect();
    let b: Vec<Duration> = sent(&batch, from_batch).into_iter().map(|s| s.1).collect();
    assert_eq!(a.len(), 4);
    assert_eq!(a, b);
}

#[test]
fn a_refused_task_in_a_batch_ends_at_once() {
    let mut sim = connected();
    let bad = TaskSpec::new(CmdId(1), vec![1]).with_priority(9);
    let good = TaskSpec::new(CmdId(2), vec![2]);
    let bad_id = sim.engine.queue_task(sim.now, bad);
    let good_id = sim.engine.queue_task(sim.now, good);
    sim.engine.send_queued(sim.now);
    sim.drain();
    assert!(sim.ends[&bad_id].1.outcome.is_err());
    let (_, end) = sim.run_until_end(good_id, secs(5));
    assert!(end.outcome.is_ok());
}

#[test]
fn response_bodies_are_slices_of_the_bytes_handed_over() {
    let mut sim = connected();
    let a = sim
        .engine
        .queue_task(sim.now, TaskSpec::new(CmdId(7), vec![1; 8]));
    let b = sim
        .engine
        .queue_task(sim.now, TaskSpec::new(CmdId(7), vec![2; 8]));
    sim.engine.send_queued(sim.now);
    // The requests leave; the test answers them itself.
    while sim.engine.poll_action().is_some() {}
    let conn = sim.open_conns()[0];
    let mut data = sim.frame(CmdId(7), Seq(a.0), b"first body");
    // The second response straddles two reads.
    let split = data.len() + 5;
    data.extend_from_slice(&sim.frame(CmdId(7), Seq(b.0), b"second body"));
    let data = Bytes::from(data);
    sim.engine.handle_data(sim.now, conn, data.slice(..split));
    sim.drain();
    let first = sim.ends[&a].1.outcome.clone().unwrap().body;
    assert_eq!(&first[..], b"first body");
    assert!(data.as_ptr_range().contains(&first.as_ptr()), "not a copy");
    assert!(!sim.ends.contains_key(&b));
    sim.engine.handle_data(sim.now, conn, data.slice(split..));
    sim.drain();
    let second = sim.ends[&b].1.outcome.clone().unwrap().body;
    assert_eq!(&second[..], b"second body");
    assert_eq!(sim.engine.task_count(), 0);
}

#[test]
fn without_task_sent_events_tasks_end_the_same_and_no_sent_event_is_built() {
    let mut with = connected();
    let mut without = connected();
    without.engine.set_task_sent_events(false);
    let (from_with, from_without) = (with.events.len(), without.events.len());
    let a = with.start(TaskSpec::new(CmdId(7), vec![1; 8]));
    let b = without.start(TaskSpec::new(CmdId(7), vec![1; 8]));
    let (_, end_a) = with.run_until_end(a, secs(5));
    let (_, end_b) = without.run_until_end(b, secs(5));
    assert_eq!(sent(&with, from_with).len(), 1);
    assert!(sent(&without, from_without).is_empty());
    assert_eq!(end_a.outcome, end_b.outcome);
    // The same profile, up to the two sims' clocks.
    let shift = without.t0 - with.t0;
    let mut moved = (*end_a.profile).clone();
    for t in [&mut moved.queued_at, &mut moved.ended_at] {
        *t += shift;
    }
    for t in [
        &mut moved.connect_start,
        &mut moved.connect_end,
        &mut moved.send_start,
        &mut moved.send_end,
        &mut moved.first_byte,
        &mut moved.last_byte,
        &mut moved.decoded_at,
    ] {
        *t = t.map(|t| t + shift);
    }
    assert_eq!(moved, *end_b.profile);
}

#[test]
fn a_recycled_profile_box_is_reused_and_tasks_start_with_a_blank_profile() {
    let mut sim = connected();
    let a = sim.start(TaskSpec::new(CmdId(7), vec![1; 8]));
    let (_, end_a) = sim.run_until_end(a, secs(5));
    assert_eq!(end_a.profile.attempts, 1);
    let a_ended = end_a.profile.ended_at;
    // The driver copied the profile out and gives the box back, still full of task a.
    let mut used = end_a.profile;
    used.zombie_rounds = 3;
    let at = std::ptr::addr_of!(*used);
    sim.engine.recycle_profile(used);
    let reused = sim.engine.profile_box(TaskProfile::new(sim.now));
    assert_eq!(
        std::ptr::addr_of!(*reused),
        at,
        "the spare box is handed out again"
    );
    assert_eq!(
        *reused,
        TaskProfile::new(sim.now),
        "holding only the new profile"
    );
    sim.engine.recycle_profile(reused);
    // A task admitted now gets that box, blank.
    sim.run_for(secs(1));
    let b = sim.start(TaskSpec::new(CmdId(7), vec![2; 8]));
    let (_, end_b) = sim.run_until_end(b, secs(5));
    let p = &end_b.profile;
    assert_eq!((p.attempts, p.zombie_rounds), (1, 0));
    assert!(p.queued_at > a_ended);
}

#[test]
fn every_end_carries_the_tag_its_task_was_started_with() {
    let mut sim = connected();
    let answered = sim
        .engine
        .start_task_tagged(sim.now, TaskSpec::new(CmdId(7), vec![1; 8]), 41);
    let untagged = sim
        .engine
        .start_task(sim.now, TaskSpec::new(CmdId(7), vec![2; 8]));
    // Refused at admission (no such priority): ended at once, tag and all.
    let refused = sim.engine.queue_task_tagged(
        sim.now,
        TaskSpec::new(CmdId(7), vec![3; 8]).with_priority(200),
        42,
    );
    let canceled = sim
        .engine
        .queue_task_tagged(sim.now, TaskSpec::new(CmdId(7), vec![4; 8]), 43);
    sim.engine.cancel_task(sim.now, canceled);
    sim.drain();
    assert!(sim.run_until(secs(5), |s| s.ends.len() == 4));
    let tag = |id: TaskId| sim.ends[&id].1.tag;
    assert_eq!(
        [tag(answered), tag(untagged), tag(refused), tag(canceled)],
        [41, 0, 42, 43]
    );
    assert!(sim.ends[&answered].1.outcome.is_ok());
}

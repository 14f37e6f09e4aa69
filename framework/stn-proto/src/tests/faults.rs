//! Faults a random script can throw at a [`Sim`]: what the property tests share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use phobos_plugin_api::{AuthCheck, AuthError, CmdId, NetKind, Seq, TaskId};
use proptest::prelude::*;

use super::harness::{server_addr, Answer, Reach, Sim};

/// One fault, or the end of one (the faults that last until undone).
#[derive(Clone, Debug)]
pub(crate) enum Fault {
    /// Cancels the started task at this index (modulo the tasks started).
    Cancel(usize),
    /// The server closes the first open connection.
    ServerClose,
    /// The server sends bytes that are not a frame on the last open connection.
    Garbage,
    /// The server sends the first 30 bytes of a response to the last task started.
    HalfFrame,
    /// The server stops answering tasks (or answers again).
    Stall(bool),
    /// The server answers heartbeats (or stops).
    HeartbeatReplies(bool),
    /// Every server address accepts, refuses or swallows connects.
    Reach(u8),
    /// The network changes (to mobile or to Wi-Fi).
    NetworkChange(bool),
    /// The app comes to the foreground or goes to the background.
    Foreground(bool),
    /// The app asks to redo its tasks.
    Redo,
    /// The engine is reset.
    Reset,
    /// How logins are answered from now on: yes, busy, no, never.
    AuthAnswer(u8),
}

/// Any fault, each kind as likely as the others.
pub(crate) fn any_fault() -> impl Strategy<Value = Fault> {
    prop_oneof![8 => once(), 4 => lasting()]
}

/// Faults that happen once.
pub(crate) fn once() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (0usize..256).prop_map(Fault::Cancel),
        Just(Fault::ServerClose),
        Just(Fault::Garbage),
        Just(Fault::HalfFrame),
        any::<bool>().prop_map(Fault::NetworkChange),
        any::<bool>().prop_map(Fault::Foreground),
        Just(Fault::Redo),
        Just(Fault::Reset),
    ]
}

/// Faults that last until the script undoes them.
pub(crate) fn lasting() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (0u8..4).prop_map(Fault::AuthAnswer),
        any::<bool>().prop_map(Fault::Stall),
        any::<bool>().prop_map(Fault::HeartbeatReplies),
        (0u8..3).prop_map(Fault::Reach),
    ]
}

impl Fault {
    /// Throws the fault at `sim`, whose script has started `started` so far.
    pub(crate) fn apply(&self, sim: &mut Sim, started: &[TaskId]) {
        match self {
            Fault::Cancel(i) => {
                if let Some(&id) = started.get(i % started.len().max(1)) {
                    sim.engine.cancel_task(sim.now, id);
                    sim.drain();
                }
            }
            Fault::ServerClose => {
                if let Some(&c) = sim.open_conns().first() {
                    sim.server_close(c);
                }
            }
            Fault::Garbage => {
                if let Some(&c) = sim.open_conns().last() {
                    sim.server_send(c, vec![0xAB; 33]);
                }
            }
            Fault::HalfFrame => {
                if let (Some(&c), Some(&id)) = (sim.open_conns().first(), started.last()) {
                    let frame = sim.frame(CmdId(1), Seq(id.0), &[1; 50]);
                    sim.server_send(c, frame[..30].to_vec());
                }
            }
            Fault::Stall(on) => sim.script.answer = if *on { Answer::Never } else { Answer::Echo },
            Fault::HeartbeatReplies(on) => sim.script.heartbeat_replies = *on,
            Fault::Reach(r) => {
                let reach = [Reach::Accept, Reach::Refuse, Reach::Blackhole][usize::from(*r)];
                for a in 1..=3 {
                    sim.script.reach.insert(server_addr(a), reach);
                }
            }
            Fault::NetworkChange(mobile) => {
                let (kind, label) = if *mobile {
                    (NetKind::Mobile, "mobile")
                } else {
                    (NetKind::Wifi, "wifi")
                };
                sim.engine.set_network(sim.now, kind, label);
                sim.drain();
            }
            Fault::Foreground(fg) => sim.foreground(*fg),
            Fault::Redo => {
                sim.engine.redo_tasks(sim.now);
                sim.drain();
            }
            Fault::AuthAnswer(a) => {
                sim.auth_answer = match a {
                    0 => Some(Ok(())),
                    1 => Some(Err(AuthError::Transient("busy".into()))),
                    2 => Some(Err(AuthError::Rejected("no".into()))),
                    _ => None,
                };
            }
            Fault::Reset => {
                sim.engine.reset(sim.now);
                sim.drain();
            }
        }
    }
}

/// An auth plugin that considers a session authenticated while its flag says so; its
/// `EnsureAuth` always succeeds.
#[derive(Debug)]
pub(crate) struct FlagAuth(pub(crate) Arc<AtomicBool>);

impl FlagAuth {
    /// One that never considers the session authenticated on its own: gated tasks depend
    /// entirely on the (scripted) `EnsureAuth` answers ([`Fault::AuthAnswer`]).
    pub(crate) fn never() -> FlagAuth {
        FlagAuth(Arc::new(AtomicBool::new(false)))
    }
}

#[async_trait::async_trait]
impl AuthCheck for FlagAuth {
    fn name(&self) -> &str {
        "flag"
    }
    fn is_authed(&self, _host: &str) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    async fn ensure_authed(&self, _host: &str) -> Result<(), AuthError> {
        Ok(())
    }
}

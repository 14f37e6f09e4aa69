//! The connect race with dead addresses first (issue #5's bar).
//!
//! A lab gets `total` server addresses; the first `dead` of them are killed with `nft`
//! (SYNs dropped, so a connect times out; or answered with a TCP reset, so it is refused),
//! the rest reach an echo server. A Phobos client, with the chosen [`ConnectProfile`](phobos_stn::ConnectProfile) and
//! the addresses in that order, is asked to connect; its [`RecordingConnector`](crate::recording::RecordingConnector) gives the
//! addresses tried, how each attempt ended and the time to the first completed handshake.
//! One echo task then checks that the link works.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use phobos_stn::LinkStatus;
use phobos_stn_proto::ConnectReport;

use crate::contender::{Contender, ContenderClient, TaskResult, LINK};
use crate::netns::{Lab, LabError, NetFaults, Side};
use crate::recording::Attempt;
use crate::server::{LabServer, ServerFaults};

/// How the dead addresses die.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadKind {
    /// SYNs are dropped: the connect times out.
    Drop,
    /// SYNs are answered with a TCP reset: the connect is refused.
    Reset,
}

/// One race measurement.
#[derive(Clone, Debug)]
pub struct RaceResult {
    /// Which client.
    pub contender: Contender,
    /// How the dead addresses die.
    pub dead_kind: DeadKind,
    /// The addresses given to the client, in order.
    pub addrs: Vec<SocketAddr>,
    /// How many of them (from the first) were dead.
    pub dead: usize,
    /// Every connect attempt, in start order.
    pub attempts: Vec<Attempt>,
    /// From asking to connect to the first completed handshake (`None`: never connected
    /// within the limit).
    pub time_to_connected: Option<Duration>,
    /// Whether the client reported the link connected and an echo task succeeded over it.
    pub task_ok: bool,
    /// The connect cycle as the client itself reported it on its link events.
    pub cycle: Option<ConnectReport>,
}

impl RaceResult {
    /// The addresses tried, in start order.
    pub fn tried(&self) -> Vec<SocketAddr> {
        self.attempts.iter().map(|a| a.addr.into()).collect()
    }
}

impl DeadKind {
    /// The name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            DeadKind::Drop => "SYN dropped",
            DeadKind::Reset => "RST",
        }
    }
}

/// Runs one race in a fresh lab: `total` addresses, the first `dead` killed as `kind`, for
/// `contender` (a Phobos profile; the naive client does not race). Waits at most `limit`
/// for the link to connect.
///
/// # Errors
///
/// When the lab cannot be set up, or `contender` is [`Contender::Naive`].
pub fn run_race(
    contender: Contender,
    kind: DeadKind,
    dead: usize,
    total: usize,
    limit: Duration,
) -> Result<RaceResult, LabError> {
    if contender == Contender::Naive {
        return Err(LabError::InvalidFault(
            "the naive client does not race".into(),
        ));
    }
    let lab = Lab::create(total)?;
    let server = LabServer::start(&lab, ServerFaults::default())?;
    let port = server.port();
    let addrs: Vec<SocketAddr> = lab
        .server_addrs()
        .iter()
        .map(|ip| SocketAddr::new(IpAddr::V4(*ip), port))
        .collect();
    let dead_addrs = addrs[..dead.min(total)].to_vec();
    let faults = match kind {
        DeadKind::Drop => NetFaults {
            syn_drop: dead_addrs,
            ..Default::default()
        },
        DeadKind::Reset => NetFaults {
            reset: dead_addrs,
            ..Default::default()
        },
    };
    lab.apply(&faults)?;
    let client_addrs = addrs.clone();
    let (attempts, time_to_connected, task_ok, cycle) = lab
        .run_in(Side::Client, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let started = contender.start(&client_addrs, limit, 1)?;
                let ContenderClient::Stn {
                    client, connector, ..
                } = &started
                else {
                    return Err("not a Phobos client".to_string());
                };
                let mut events = client.link_events();
                client.make_sure_connected(LINK);
                let connected = tokio::time::timeout(limit, async {
                    events
                        .wait_for(LINK, |e| matches!(e.status, LinkStatus::Connected(_)))
                        .await
                })
                .await;
                let mut task_ok = false;
                let mut cycle = None;
                if let Ok(Ok(event)) = connected {
                    cycle = event.cycle;
                    let body = Bytes::from_static(b"race");
                    task_ok = started.run_task(body, limit).await == TaskResult::Success;
                }
                let attempts = connector.attempts();
                let ttc = connector.time_to_connected();
                started.shutdown().await;
                Ok((attempts, ttc, task_ok, cycle))
            })
        })?
        .map_err(|e| LabError::Io {
            what: "running the race client".into(),
            source: std::io::Error::other(e),
        })?;
    server.stop()?;
    Ok(RaceResult {
        contender,
        dead_kind: kind,
        addrs,
        dead,
        attempts,
        time_to_connected,
        task_ok,
        cycle,
    })
}

/// A Markdown table of race results, one row per result.
pub fn markdown_table(results: &[RaceResult]) -> String {
    let mut s = String::from(
        "| client | dead first | addresses | time to connected (connector / client's cycle \
         report) | tried (outcome @ start) | echo |\n|---|---|---|---|---|---|\n",
    );
    for r in results {
        let tried: Vec<String> = r
            .attempts
            .iter()
            .map(|a| {
                format!(
                    ".{} {:?} @ {:.2} s",
                    last_octet(a.addr.into()),
                    a.outcome,
                    a.started.as_secs_f64()
                )
            })
            .collect();
        let reported = r
            .cycle
            .as_ref()
            .and_then(|c| c.connected_after)
            .map_or("–".to_string(), |d| format!("{:.3} s", d.as_secs_f64()));
        s.push_str(&format!(
            "| {} | {} × {} | {} | {} / {} | {} | {} |\n",
            r.contender,
            r.dead,
            r.dead_kind.name(),
            r.addrs.len(),
            r.time_to_connected
                .map_or("never".to_string(), |d| format!("{:.3} s", d.as_secs_f64())),
            reported,
            tried.join(", "),
            if r.task_ok { "ok" } else { "failed" },
        ));
    }
    s
}

fn last_octet(addr: SocketAddr) -> u8 {
    match addr.ip() {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(v6) => v6.octets()[15],
    }
}

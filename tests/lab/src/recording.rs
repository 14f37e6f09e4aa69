//! [`RecordingConnector`]: plain TCP that writes down every connect attempt.
//!
//! The client's core decides which address to try and when; the connector sees each attempt
//! start and end (or be dropped when the core aborts it after another address won the race),
//! so the lab learns the tried sequence, each outcome and the time to connected without any
//! help from the client under test.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use phobos_plugin_api::IpPort;
use phobos_stn::{Connector, LinkStream, TcpConnector};
use tokio::time::Instant;

/// A [`Connector`] wrapping [`TcpConnector`] that records every attempt.
#[derive(Clone, Debug)]
pub struct RecordingConnector {
    epoch: Instant,
    log: Arc<Mutex<Vec<Attempt>>>,
}

/// One connect attempt as the connector saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Where to.
    pub addr: IpPort,
    /// When it started, from the connector's creation.
    pub started: Duration,
    /// When it ended, from the connector's creation (`None` while in progress).
    pub ended: Option<Duration>,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

/// How a connect attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// Still in progress.
    Pending,
    /// The TCP handshake completed.
    Connected,
    /// The peer answered with a reset.
    Refused,
    /// Another OS error (a timeout inside the kernel, unreachable…).
    Failed,
    /// The client gave up on it (its own connect timeout, or another address won).
    Abandoned,
}

impl RecordingConnector {
    /// A connector whose times count from now.
    pub fn new() -> Self {
        RecordingConnector {
            epoch: Instant::now(),
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Every attempt so far, in start order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.lock().clone()
    }

    /// The time from the connector's creation to the first completed handshake.
    pub fn time_to_connected(&self) -> Option<Duration> {
        self.lock()
            .iter()
            .filter(|a| a.outcome == AttemptOutcome::Connected)
            .filter_map(|a| a.ended)
            .min()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Attempt>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for RecordingConnector {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Connector for RecordingConnector {
    async fn connect(&self, addr: IpPort) -> io::Result<Box<dyn LinkStream>> {
        let index = {
            let mut log = self.lock();
            log.push(Attempt {
                addr,
                started: self.epoch.elapsed(),
                ended: None,
                outcome: AttemptOutcome::Pending,
            });
            log.len() - 1
        };
        // Marks the attempt abandoned if the driver drops this future before it finishes.
        let mut guard = EndGuard {
            connector: self,
            index,
            outcome: AttemptOutcome::Abandoned,
        };
        let result = TcpConnector::new().connect(addr).await;
        guard.outcome = match &result {
            Ok(_) => AttemptOutcome::Connected,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => AttemptOutcome::Refused,
            Err(_) => AttemptOutcome::Failed,
        };
        result
    }
}

struct EndGuard<'a> {
    connector: &'a RecordingConnector,
    index: usize,
    outcome: AttemptOutcome,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        let now = self.connector.epoch.elapsed();
        if let Some(a) = self.connector.lock().get_mut(self.index) {
            a.ended = Some(now);
            a.outcome = self.outcome;
        }
    }
}

//! Setup shared by the long-link integration tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use phobos_codec_mars::MarsCodec;
use phobos_stn::{Client, ClientConfig};
use phobos_test_support::MockLongLinkServer;

/// The Mars codec with default settings.
pub fn codec() -> Arc<MarsCodec> {
    Arc::new(MarsCodec::default())
}

/// A client whose default long link goes straight to `server`, with the app in the
/// foreground: there a task waits at most 5 s for a reconnect (Mars's FG_1MIN row); in the
/// background it would be 30 s, longer than a no-retry task's 20 s budget.
pub fn client_for(server: &MockLongLinkServer) -> Client {
    let config = ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .build()
        .expect("a valid client config");
    let client = Client::start(config).expect("the client starts");
    client.set_foreground(true);
    client
}

/// Receives the ends of `n` tasks from `batch`, checking that no task ends twice.
pub async fn ends_once(batch: &mut phobos_stn::TaskBatch, n: usize) -> Vec<phobos_stn::BatchEnd> {
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::with_capacity(n);
    let mut ends = Vec::new();
    while all.len() < n {
        ends.clear();
        assert!(batch.recv_many(&mut ends).await > 0, "every task ends");
        for end in ends.drain(..) {
            assert!(seen.insert(end.key), "{:?} ended twice", end.key);
            all.push(end);
        }
    }
    all
}

/// A multi-thread runtime with one worker, as a small app or a server beside it would use.
pub fn one_worker_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

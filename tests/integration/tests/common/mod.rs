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

//! What the batch and end-handler tests share: a client of the mock server's one link.

use std::sync::Arc;

use phobos_codec_mars::MarsCodec;
use phobos_stn::{Client, ClientConfig};
use phobos_test_support::MockLongLinkServer;

pub(crate) fn codec() -> Arc<MarsCodec> {
    Arc::new(MarsCodec::default())
}

/// A config with `server` as the default long link's one address.
pub(crate) fn config_for(server: &MockLongLinkServer) -> ClientConfig {
    ClientConfig::builder(codec())
        .link_addrs("default-longlink", [server.ip_port()])
        .build()
        .expect("config")
}

/// A started client of `server`, in the foreground.
pub(crate) fn client_for(server: &MockLongLinkServer) -> Client {
    let client = Client::start(config_for(server)).expect("client");
    client.set_foreground(true);
    client
}

//! What the batch and end-handler tests share: a client of the mock server's one link.

use std::sync::Arc;

use phobos_codec_mars::MarsCodec;
use phobos_stn::{BlockingClient, Client, ClientConfig, TaskBatch, TaskError, TaskKey};
use phobos_test_support::{ConnScript, MockLongLinkServer, Reply};
use tokio::runtime::Runtime;

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

/// A mock server whose every connection answers nothing (each request stalls), on a runtime
/// of its own, and a current-thread runtime for a client: dropping the client's runtime
/// stops its driver without a teardown while the server lives on. Every connection stalls,
/// not just the first, since a connect seen late under load gets a hedge, a second
/// connection the client may keep.
pub(crate) fn stalling_server_and_client_runtime() -> (Runtime, MockLongLinkServer, Runtime) {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = server_rt
        .block_on(
            MockLongLinkServer::builder(codec())
                .default_script(ConnScript::echo().default_reply(Reply::stall()))
                .start(),
        )
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (server_rt, server, client_rt)
}

/// An echoing mock server on a runtime of its own, and a [`BlockingClient`] of it.
pub(crate) fn blocking_client_of_an_echo_server() -> (Runtime, MockLongLinkServer, BlockingClient) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(MockLongLinkServer::start_echo(codec()))
        .unwrap();
    let client = BlockingClient::start(config_for(&server)).unwrap();
    (rt, server, client)
}

/// A client of a mock server whose first `stalled` requests are never answered (the rest are
/// echoed).
pub(crate) async fn client_whose_first_requests_stall(
    stalled: usize,
) -> (MockLongLinkServer, Client) {
    let script = (0..stalled).fold(ConnScript::echo(), |s, _| s.reply(Reply::stall()));
    let server = MockLongLinkServer::builder(codec())
        .script(script)
        .start()
        .await
        .unwrap();
    let client = client_for(&server);
    (server, client)
}

/// Cancels `batch`'s task `key` and asserts that the batch's next end is that task's,
/// canceled.
pub(crate) async fn cancel_ends_it(batch: &mut TaskBatch, key: TaskKey) {
    batch.cancel(key);
    let end = batch.recv().await.unwrap();
    assert_eq!(end.key, key);
    assert_eq!(end.outcome.unwrap_err(), TaskError::Canceled);
}

//! The blocking facade, used from plain threads (as an FFI host would).

use std::sync::Arc;

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::CmdId;
use phobos_stn::{BlockingClient, ClientConfig, LocalError, TaskError, TaskSpec};
use phobos_test_support::{ConnScript, MockLongLinkServer, Reply, Step};

/// The mock server runs on its own runtime; the test thread never enters it.
///
/// These tests run in real time, where a connect the driver sees complete only after the
/// 250 ms stagger (a loaded machine) gets a hedge: a second connection to the same address,
/// which the client may keep. So a script the tests rely on is every connection's
/// (`default_script`), not only the first accepted one's (`script`).
fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn config_for(server: &MockLongLinkServer) -> ClientConfig {
    ClientConfig::builder(Arc::new(MarsCodec::default()))
        .link_addrs("default-longlink", [server.ip_port()])
        .build()
        .unwrap()
}

#[test]
fn run_task_blocks_until_the_response() {
    let rt = server_runtime();
    let server = rt
        .block_on(MockLongLinkServer::start_echo(Arc::new(
            MarsCodec::default(),
        )))
        .unwrap();
    let client = BlockingClient::start(config_for(&server)).unwrap();
    let resp = client
        .run_task(TaskSpec::new(CmdId(4), &b"from a thread"[..]))
        .unwrap();
    assert_eq!(&resp.body[..], b"from a thread");
    // Several threads share one client.
    std::thread::scope(|s| {
        for i in 0..4u8 {
            let c = &client;
            s.spawn(move || {
                let r = c.run_task(TaskSpec::new(CmdId(4), vec![i; 8])).unwrap();
                assert_eq!(&r.body[..], &[i; 8]);
            });
        }
    });
    assert_eq!(client.stats().unwrap().tasks_in_flight, 0);
    client.shutdown();
}

#[test]
fn shutdown_ends_a_waiting_task_with_reset() {
    let rt = server_runtime();
    let server = rt
        .block_on(
            MockLongLinkServer::builder(Arc::new(MarsCodec::default()))
                .default_script(ConnScript::echo().default_reply(Reply::stall()))
                .start(),
        )
        .unwrap();
    let client = BlockingClient::start(config_for(&server)).unwrap();
    let handle = client.start_task(TaskSpec::new(CmdId(1), &b"stuck"[..]));
    rt.block_on(server.wait_for_task_frames(1));
    client.shutdown();
    assert_eq!(
        handle.wait().unwrap_err(),
        TaskError::Local(LocalError::Reset)
    );
}

#[test]
fn pushes_can_be_received_blocking() {
    let rt = server_runtime();
    let server = rt
        .block_on(
            MockLongLinkServer::builder(Arc::new(MarsCodec::default()))
                .default_script(ConnScript::echo().on_connect(vec![Step::Push {
                    cmd: CmdId(77),
                    body: b"hi".to_vec(),
                }]))
                .start(),
        )
        .unwrap();
    let client = BlockingClient::start(config_for(&server)).unwrap();
    let mut pushes = client.subscribe_pushes();
    client.make_sure_connected("default-longlink");
    let p = pushes.blocking_recv().unwrap();
    assert_eq!((p.cmd_id, &p.body[..]), (CmdId(77), &b"hi"[..]));
}

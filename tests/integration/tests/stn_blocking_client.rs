//! The blocking facade, used from plain threads (as an FFI host would).

use std::sync::Arc;
use std::time::Duration;

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::CmdId;
use phobos_stn::{BlockingClient, ClientConfig, LocalError, TaskError, TaskSpec};
use phobos_stn_proto::Timing;
use phobos_test_support::{ConnScript, MockLongLinkServer, Reply, StaticIpSource, Step};

mod common;
use common::GatedSource;

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

/// An echo server on a runtime of its own (kept alive by the caller).
fn echo_server() -> (tokio::runtime::Runtime, MockLongLinkServer) {
    let rt = server_runtime();
    let server = rt
        .block_on(MockLongLinkServer::start_echo(Arc::new(
            MarsCodec::default(),
        )))
        .unwrap();
    (rt, server)
}

#[test]
fn run_task_blocks_until_the_response() {
    let (_rt, server) = echo_server();
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

/// The driver's runtime has one thread; a loaded IP source blocks the thread it is called on
/// for the whole call. Called there, it would stop every link and timer of the client.
#[test]
fn a_loaded_ip_source_blocked_in_a_call_leaves_the_driver_running() {
    let rt = server_runtime();
    let server = rt
        .block_on(MockLongLinkServer::start_echo(Arc::new(
            MarsCodec::default(),
        )))
        .unwrap();
    let limit = Duration::from_millis(300);
    let (gated, blocker, gate) = GatedSource::new(server.addr());
    let config = ClientConfig::builder(Arc::new(MarsCodec::default()))
        .link_addrs("default-longlink", [server.ip_port()])
        .link_hosts("b", ["b.example"], [server.addr().port()])
        .ip_source(gated.loaded())
        .ip_source(Arc::new(
            StaticIpSource::new().with_host("b.example", [server.ip_port()]),
        ))
        .core(|c| {
            c.timing(Timing {
                resolve_timeout: limit,
                ..Timing::default()
            })
        })
        .watchdog_threshold(limit / 6)
        .build()
        .unwrap();
    let client = BlockingClient::start(config).unwrap();
    client.set_foreground(true);
    client
        .run_task(TaskSpec::new(CmdId(4), &b"warm"[..]))
        .unwrap();

    // Link "b" asks the loaded source first, which blocks until the gate opens.
    let on_b = client.start_task(TaskSpec::new(CmdId(4), &b"b"[..]).with_link("b"));
    rt.block_on(blocker.entered.notified());
    let on_a = client.run_task(TaskSpec::new(CmdId(4), &b"a"[..])).unwrap();
    assert_eq!(&on_a.body[..], b"a");
    assert!(
        !blocker.has_returned(),
        "the task on the default link waited for link b's source"
    );
    // At the source's limit the chain moves on to the next source.
    let on_b = on_b.wait().unwrap();
    assert_eq!(&on_b.body[..], b"b");
    assert!(
        !blocker.has_returned(),
        "link b waited past the limit for the blocked source"
    );
    // The watchdog ran meanwhile and reported the call blocked past its threshold.
    assert!(client.stats().unwrap().watchdog_stalls >= 1);

    // Stopping the client does not wait for the call either.
    client.shutdown();
    assert!(
        !blocker.has_returned(),
        "the shutdown waited for the blocked source"
    );
    gate.open();
}

/// Link events and pushes are read from a plain thread: blocking, or without waiting.
/// Before, link events had only `async` receives, though the facade needs no runtime.
#[test]
fn streams_are_read_from_a_plain_thread() {
    let (_rt, server) = echo_server();
    let client = BlockingClient::start(config_for(&server)).unwrap();
    let mut events = client.link_events();
    let mut pushes = client.subscribe_pushes();
    assert_eq!(events.try_recv(), Ok(None), "nothing yet");
    assert_eq!(pushes.try_recv().map(|p| p.is_none()), Ok(true));
    client.make_sure_connected("default-longlink");
    loop {
        let ev = events.blocking_recv().unwrap();
        if matches!(ev.status, phobos_stn::LinkStatus::Connected(_)) {
            break;
        }
    }
    client.shutdown();
    // After shutdown the streams end.
    loop {
        match events.blocking_recv() {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e, phobos_stn::StreamError::Closed);
                break;
            }
        }
    }
    assert_eq!(
        pushes.try_recv().map(|p| p.is_none()),
        Err(phobos_stn::StreamError::Closed)
    );
}

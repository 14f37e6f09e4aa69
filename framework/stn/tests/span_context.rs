//! The driver and the tasks it spawns log inside the span the client was started in, so an
//! app running several clients can tell their lines apart.

use std::io::Write;
use std::sync::{Arc, Mutex};

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::CmdId;
use phobos_stn::{Client, ClientConfig, TaskSpec};
use phobos_test_support::MockLongLinkServer;
use tracing::Instrument;

/// Everything the subscriber wrote, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Runs one task on a client started inside the span `app{client="alpha"}` and another
/// started outside any span; returns the driver's log lines.
fn run_two_clients() -> Vec<String> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("phobos_stn=debug,span_context=info")
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let codec = Arc::new(MarsCodec::default());
        let server = MockLongLinkServer::start_echo(codec.clone()).await.unwrap();
        let config = || {
            ClientConfig::builder(codec.clone())
                .link_addrs("default-longlink", [server.ip_port()])
                .build()
                .unwrap()
        };
        let span = tracing::info_span!("app", client = "alpha");
        let alpha = span.in_scope(|| Client::start(config()).unwrap());
        let beta = Client::start(config()).unwrap();
        for client in [&alpha, &beta] {
            client.set_foreground(true);
            let task = client.start_task(TaskSpec::new(CmdId(7), &b"ping"[..]));
            let end = task.instrument(tracing::info_span!("caller")).await;
            assert_eq!(&end.unwrap().body[..], b"ping");
            client.shutdown().await;
        }
    });
    captured.lines()
}

#[test]
fn a_client_started_in_a_span_logs_in_it_and_another_does_not() {
    let lines = run_two_clients();
    let alpha = |l: &&String| l.contains("app{client=\"alpha\"}");
    // Two of the driver's own lines, one before and one after its connect task ran.
    for needle in ["connecting", "connected"] {
        let hits: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
        assert!(
            hits.iter().any(alpha),
            "no `{needle}` line in alpha's span: {lines:#?}"
        );
        assert!(
            !hits.iter().all(alpha),
            "beta's `{needle}` line should carry no span: {lines:#?}"
        );
    }
}

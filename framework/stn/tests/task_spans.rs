//! Every task is a `tracing` span (target `phobos_stn::task`, name `task`): opened when the
//! task is admitted, closed when it ends, with the task's profile recorded into it at the end
//! and the task's own end logged inside it. Its parent is the span the client was started in.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::CmdId;
use phobos_stn::{BatchEnd, Client, ClientConfig, TaskBatch, TaskSpec};
use phobos_test_support::MockLongLinkServer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// One `task` span as the subscriber saw it.
#[derive(Clone, Debug, Default)]
struct TaskSpan {
    fields: BTreeMap<String, String>,
    parent: Option<String>,
    closed: bool,
    /// Messages of the events logged inside it.
    events: Vec<String>,
}

/// Records the `phobos_stn::task` spans, by span id.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<BTreeMap<u64, TaskSpan>>>);

impl Spans {
    fn all(&self) -> Vec<TaskSpan> {
        self.0.lock().unwrap().values().cloned().collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().target() != "phobos_stn::task" {
            return;
        }
        let mut span = TaskSpan {
            parent: ctx
                .span(id)
                .and_then(|s| s.parent())
                .map(|p| p.name().to_owned()),
            ..TaskSpan::default()
        };
        attrs.record(&mut Fields(&mut span.fields));
        self.0.lock().unwrap().insert(id.into_u64(), span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(current) = ctx.event_span(event) else {
            return;
        };
        if let Some(span) = self.0.lock().unwrap().get_mut(&current.id().into_u64()) {
            let mut fields = BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            span.events
                .push(fields.remove("message").unwrap_or_default());
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            span.closed = true;
        }
    }
}

/// Runs `body` with a client started inside the span `app`, its link pointed at an echo
/// server (or, with `dead`, at a port nobody listens on), with the task spans recorded;
/// returns them and the link's address.
fn with_client<F, Fut>(dead: bool, body: F) -> (Vec<TaskSpan>, std::net::SocketAddr)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(spans.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let codec = Arc::new(MarsCodec::default());
        let server = MockLongLinkServer::start_echo(codec.clone()).await.unwrap();
        let addr = if dead {
            // Nothing listens there once the listener is dropped: every connect is refused.
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        } else {
            server.addr()
        };
        let config = ClientConfig::builder(codec)
            .link_addrs("default-longlink", [addr.into()])
            .build()
            .unwrap();
        let client = tracing::info_span!("app").in_scope(|| Client::start(config).unwrap());
        client.set_foreground(true);
        body(client.clone()).await;
        client.shutdown().await;
        addr
    });
    (spans.all(), addr)
}

/// Every end `batch` still has coming.
async fn all_ends(batch: &mut TaskBatch) -> Vec<BatchEnd> {
    let mut ends = Vec::new();
    while batch.recv_many(&mut ends).await > 0 {}
    ends
}

fn field<'a>(span: &'a TaskSpan, name: &str) -> &'a str {
    span.fields
        .get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no `{name}` in {span:#?}"))
}

#[test]
fn a_task_is_a_span_closed_at_its_end_with_its_profile() {
    let (spans, addr) = with_client(false, |client| async move {
        let resp = client
            .start_task(TaskSpec::new(CmdId(7), &b"ping"[..]))
            .await
            .unwrap();
        assert_eq!(&resp.body[..], b"ping");
    });
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert!(span.closed, "{span:#?}");
    assert_eq!(span.parent.as_deref(), Some("app"));
    assert_eq!(field(span, "cmd"), "7");
    assert_eq!(field(span, "outcome"), "ok");
    assert_eq!(field(span, "attempts"), "1");
    assert_eq!(field(span, "link"), "default-longlink");
    assert_eq!(field(span, "addr"), addr.to_string());
    // 20-byte Mars head + 4-byte body, each way.
    assert_eq!(field(span, "sent_bytes"), "24");
    assert_eq!(field(span, "received_bytes"), "24");
    for phase in [
        "queued_us",
        "connect_us",
        "send_us",
        "first_byte_us",
        "last_byte_us",
        "decode_us",
        "elapsed_us",
    ] {
        field(span, phase).parse::<u64>().unwrap();
    }
    assert_eq!(span.events, ["task ended: ok"]);
}

#[test]
fn a_failed_task_is_a_span_with_its_failure() {
    let (spans, _) = with_client(true, |client| async move {
        let err = client
            .start_task(
                TaskSpec::new(CmdId(7), &b"ping"[..]).with_total_timeout(Duration::from_secs(5)),
            )
            .await
            .unwrap_err();
        assert_ne!(err.to_string(), "");
    });
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert!(span.closed, "{span:#?}");
    assert_ne!(field(span, "outcome"), "ok");
    assert_eq!(span.events, ["task ended: failed"]);
    // Never sent: no phase after the queue.
    assert!(!span.fields.contains_key("send_us"), "{span:#?}");
}

#[test]
fn every_task_of_a_batch_is_a_span() {
    let (spans, _) = with_client(false, |client| async move {
        let mut batch = client.task_batch();
        batch.start((0..5u8).map(|i| TaskSpec::new(CmdId(9), vec![i])));
        assert_eq!(all_ends(&mut batch).await.len(), 5);
    });
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let mut ids: Vec<&str> = spans.iter().map(|s| field(s, "task")).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5, "one span per task: {spans:#?}");
    for span in &spans {
        assert!(span.closed && field(span, "outcome") == "ok", "{span:#?}");
        assert_eq!(field(span, "cmd"), "9");
    }
}

/// Tasks started with `start_like` get their spans too, each with its own byte counts, also
/// when a burst of them ends together (the later rounds find the link up).
#[test]
fn every_task_of_a_like_batch_is_a_span_with_its_own_byte_counts() {
    let (spans, _) = with_client(false, |client| async move {
        let mut batch = client.task_batch();
        let params = TaskSpec::new(CmdId(0), Vec::new());
        for _ in 0..3 {
            let requests =
                (0..5u8).map(|i| (CmdId(9), bytes::Bytes::from(vec![i; 1 + i as usize])));
            batch.start_like(&params, requests);
            assert_eq!(all_ends(&mut batch).await.len(), 5);
        }
    });
    assert_eq!(spans.len(), 15, "{spans:#?}");
    let mut sent: Vec<&str> = spans.iter().map(|s| field(s, "sent_bytes")).collect();
    sent.sort();
    let want: Vec<String> = (0..3)
        .flat_map(|_| (0..5).map(|i| (21 + i).to_string()))
        .collect();
    let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(sent, want);
    for span in &spans {
        assert!(span.closed && field(span, "outcome") == "ok", "{span:#?}");
        assert_eq!(field(span, "sent_bytes"), field(span, "received_bytes"));
    }
}

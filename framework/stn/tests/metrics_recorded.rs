//! The driver's counters reach an installed `metrics` recorder.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::CmdId;
use phobos_stn::{metrics as m, BatchEnd, Client, ClientConfig, TaskSpec};
use phobos_test_support::{ConnScript, MockLongLinkServer, Reply};

/// Counts every counter increment, and every value a histogram records, by full key (name
/// and labels).
#[derive(Debug, Default)]
struct Counting {
    counters: Mutex<HashMap<String, Arc<Count>>>,
    histograms: Mutex<HashMap<String, Arc<Count>>>,
    gauges: Mutex<HashMap<String, Arc<Level>>>,
}

/// A gauge's value (the bits of an `f64`).
#[derive(Debug, Default)]
struct Level(AtomicU64);

impl Level {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::SeqCst))
    }
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                Some(f(f64::from_bits(b)).to_bits())
            });
    }
}

impl GaugeFn for Level {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }
    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

/// A histogram counts the values it is given.
impl HistogramFn for Count {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn record_many(&self, _: f64, count: usize) {
        self.0.fetch_add(count as u64, Ordering::SeqCst);
    }
}

/// The count of `key` in `map`, made on first use.
fn count_of(map: &Mutex<HashMap<String, Arc<Count>>>, key: &Key) -> Arc<Count> {
    let mut map = map.lock().unwrap();
    map.entry(full_name(key)).or_default().clone()
}

fn full_name(key: &Key) -> String {
    let mut name = key.name().to_owned();
    for l in key.labels() {
        name.push_str(&format!("{{{}={}}}", l.key(), l.value()));
    }
    name
}

impl Counting {
    fn get(&self, name: &str, label: Option<(&str, &str)>) -> u64 {
        let key = match label {
            Some((k, v)) => format!("{name}{{{k}={v}}}"),
            None => name.to_owned(),
        };
        let map = self.counters.lock().unwrap();
        map.get(&key).map_or(0, |c| c.0.load(Ordering::SeqCst))
    }

    /// How many values the histogram `name{label}` recorded.
    fn recorded(&self, name: &str, (k, v): (&str, &str)) -> u64 {
        let map = self.histograms.lock().unwrap();
        map.get(&format!("{name}{{{k}={v}}}"))
            .map_or(0, |c| c.0.load(Ordering::SeqCst))
    }
}

impl Recorder for &'static Counting {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(count_of(&self.counters, key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut map = self.gauges.lock().unwrap();
        Gauge::from_arc(map.entry(full_name(key)).or_default().clone())
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(count_of(&self.histograms, key))
    }
}

#[tokio::test(start_paused = true)]
async fn task_and_link_counters_are_recorded() {
    let counting: &'static Counting = Box::leak(Box::default());
    metrics::set_global_recorder(counting).expect("the only recorder in this test binary");

    let codec = Arc::new(MarsCodec::default());
    let server = MockLongLinkServer::start_echo(codec.clone()).await.unwrap();
    let config = ClientConfig::builder(codec.clone())
        .link_addrs("default-longlink", [server.ip_port()])
        .build()
        .unwrap();
    let client = Client::start(config).unwrap();
    // A second client in the process, connected too: the gauge of connected links counts
    // both (each driver moves it by its own changes; set to its own count, the last driver
    // to change won), and neither after they stopped.
    let other_server = MockLongLinkServer::start_echo(codec.clone()).await.unwrap();
    let other = Client::start(
        ClientConfig::builder(codec)
            .link_addrs("default-longlink", [other_server.ip_port()])
            .build()
            .unwrap(),
    )
    .unwrap();
    other
        .start_task(TaskSpec::new(CmdId(1), &b"other"[..]))
        .await
        .unwrap();
    for _ in 0..3 {
        client
            .start_task(TaskSpec::new(CmdId(1), &b"count me"[..]))
            .await
            .unwrap();
    }
    // A batch's tasks, answered in one read, end together: each end still counts, and
    // each one's duration is recorded.
    let mut batch = client.task_batch();
    let params = TaskSpec::new(CmdId(1), &b""[..]);
    batch.start_like(
        &params,
        (0..20).map(|_| (CmdId(1), Bytes::from_static(b"count us"))),
    );
    let mut ends: Vec<BatchEnd> = Vec::new();
    while batch.recv_many(&mut ends).await > 0 {}
    assert_eq!(ends.len(), 20);
    assert!(ends.iter().all(|e| e.outcome.is_ok()));
    let err = client
        .start_task(TaskSpec::new(CmdId(1), &b"x"[..]).with_priority(9))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), phobos_stn::ErrorKind::Param);
    let connected = || {
        let map = counting.gauges.lock().unwrap();
        map.get(m::LINKS_CONNECTED).map(|g| g.get())
    };
    assert_eq!(connected(), Some(2.0), "two clients, a link each");
    client.shutdown().await;
    assert_eq!(connected(), Some(1.0));
    assert!(matches!(
        client.link_status("default-longlink"),
        Some(phobos_stn::LinkStatus::Disconnected)
    ));
    other.shutdown().await;
    assert_eq!(connected(), Some(0.0));

    // The counters are the process's: the other client's one task and one link are in them.
    assert_eq!(counting.get(m::TASKS_STARTED, None), 24 + 1);
    assert_eq!(
        counting.get(m::TASKS_ENDED, Some(("outcome", "ok"))),
        23 + 1
    );
    assert_eq!(
        counting.recorded(m::TASK_SECONDS, ("outcome", "ok")),
        23 + 1
    );
    assert_eq!(counting.get(m::TASKS_ENDED, Some(("outcome", "param"))), 1);
    assert_eq!(
        counting.get(m::CONNECT_ATTEMPTS, Some(("link", "default-longlink"))),
        1 + 1
    );
    assert!(counting.get(m::BYTES_SENT, None) > 0);
    assert!(counting.get(m::BYTES_RECEIVED, None) > 0);
    let status = |st: &str| {
        let key = format!("{}{{link=default-longlink}}{{status={st}}}", m::LINK_STATUS);
        let map = counting.counters.lock().unwrap();
        map.get(&key).map_or(0, |c| c.0.load(Ordering::SeqCst))
    };
    assert_eq!((status("connecting"), status("connected")), (1 + 1, 1 + 1));

    // Tasks a shutdown resets are counted as ended ("local"), as they are started: before,
    // started minus ended drifted up by every task a shutdown or a dropped runtime reset.
    let codec = Arc::new(MarsCodec::default());
    let stalling = MockLongLinkServer::builder(codec.clone())
        .default_script(ConnScript::echo().default_reply(Reply::stall()))
        .start()
        .await
        .unwrap();
    let third = Client::start(
        ClientConfig::builder(codec.clone())
            .link_addrs("default-longlink", [stalling.ip_port()])
            .build()
            .unwrap(),
    )
    .unwrap();
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let third = third.clone();
            tokio::spawn(async move {
                third
                    .start_task(TaskSpec::new(CmdId(1), format!("held {i}").into_bytes()))
                    .await
            })
        })
        .collect();
    stalling.wait_for_task_frames(3).await;
    third.shutdown().await;
    for h in handles {
        assert!(h.await.unwrap().is_err());
    }
    assert_eq!(counting.get(m::TASKS_ENDED, Some(("outcome", "local"))), 3);

    // A driver dropped with its runtime (no teardown) takes its link out of the gauge and
    // out of `link_status` too: before, both said connected for good.
    let echo = MockLongLinkServer::start_echo(codec.clone()).await.unwrap();
    let addr = echo.ip_port();
    let dropped = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let client = Client::start(
                ClientConfig::builder(codec)
                    .link_addrs("default-longlink", [addr])
                    .build()
                    .unwrap(),
            )
            .unwrap();
            client
                .start_task(TaskSpec::new(CmdId(1), &b"up"[..]))
                .await
                .unwrap();
            client
        });
        let up = counting
            .gauges
            .lock()
            .unwrap()
            .get(m::LINKS_CONNECTED)
            .map(|g| g.get());
        drop(rt);
        (up, client.link_status("default-longlink"))
    })
    .await
    .unwrap();
    assert_eq!(dropped.0, Some(1.0));
    assert_eq!(connected(), Some(0.0));
    assert!(
        !matches!(dropped.1, Some(phobos_stn::LinkStatus::Connected(_))),
        "{:?}",
        dropped.1
    );
}

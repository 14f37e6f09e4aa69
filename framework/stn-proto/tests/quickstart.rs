//! Runs the crate-level example end to end with the Mars codec.

use std::sync::Arc;
use std::time::{Duration, Instant};

use phobos_codec_mars::MarsCodec;
use phobos_plugin_api::{FrameHead, PacketCodec, Seq};
use phobos_stn_proto::{Action, CmdId, Config, Engine, Event, LinkConfig, TaskSpec};

#[test]
fn one_task_over_a_fresh_link() {
    let codec: Arc<dyn PacketCodec> = Arc::new(MarsCodec::default());
    // Virtual time zero; the engine itself never reads a clock.
    let t0 = Instant::now();
    let addr = "10.0.0.1:8080"
        .parse::<std::net::SocketAddr>()
        .unwrap()
        .into();
    let config = Config::builder(codec.clone())
        .link(LinkConfig::new("default-longlink").addrs([addr]))
        .build()
        .unwrap();
    let mut engine = Engine::new(config, t0).unwrap();

    let id = engine.start_task(t0, TaskSpec::new(CmdId(42), &b"ping"[..]));
    let Some(Action::Connect { attempt, .. }) = engine.poll_action() else {
        panic!("expected a connect")
    };
    engine.handle_connected(t0 + Duration::from_millis(40), attempt);
    let mut sends = 0;
    while let Some(action) = engine.poll_action() {
        assert!(matches!(action, Action::Send { .. }));
        sends += 1;
    }
    assert_eq!(sends, 2, "heartbeat, then the request");
    let mut reply = Vec::new();
    codec
        .encode(
            FrameHead::new(CmdId(42), Seq(id.0)),
            b"pong",
            &[],
            &mut reply,
        )
        .unwrap();
    engine.handle_bytes(t0 + Duration::from_millis(80), attempt, &reply);
    let end = std::iter::from_fn(|| engine.poll_event())
        .find_map(|e| match e {
            Event::TaskEnded(end) => Some(end),
            _ => None,
        })
        .unwrap();
    assert_eq!(&end.outcome.unwrap().body[..], b"pong");
    // Next deadline: the reply to the heartbeat sent at connect, 8 s after the last bytes.
    assert_eq!(
        engine.poll_timeout(),
        Some(t0 + Duration::from_millis(80) + Duration::from_secs(8))
    );
}

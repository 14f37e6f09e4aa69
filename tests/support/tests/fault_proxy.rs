//! Tests of the fault-injecting proxy against a plain loopback upstream.

use std::time::Duration;

use phobos_test_support::{Direction, DirectionFaults, FaultProxy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

async fn pair(
    config: impl FnOnce(std::net::SocketAddr) -> ProxyConfig,
) -> (FaultProxy, TcpStream, TcpStream) {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = FaultProxy::start(config(upstream.local_addr().unwrap()))
        .await
        .unwrap();
    let client = TcpStream::connect(proxy.addr()).await.unwrap();
    let (server, _) = upstream.accept().await.unwrap();
    (proxy, client, server)
}

async fn read_n(sock: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    sock.read_exact(&mut v).await.unwrap();
    v
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

#[tokio::test(start_paused = true)]
async fn forwards_both_directions_faithfully_by_default() {
    let (proxy, mut c, mut s) = pair(|u| ProxyConfig::new(u, 1)).await;
    c.write_all(b"up").await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, b"up");
    s.write_all(b"down!").await.unwrap();
    assert_eq!(read_n(&mut c, 5).await, b"down!");
    assert_eq!(proxy.bytes_forwarded(Direction::ClientToServer), 2);
    assert_eq!(proxy.bytes_forwarded(Direction::ServerToClient), 5);
    assert_eq!(proxy.connection_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn latency_and_jitter_delay_delivery_in_virtual_time_and_keep_order() {
    let faults = DirectionFaults {
        latency: Duration::from_millis(200),
        jitter: Duration::from_millis(100),
        ..Default::default()
    };
    let (_p, mut c, mut s) = pair(|u| ProxyConfig::new(u, 2).client_to_server(faults)).await;
    let t0 = Instant::now();
    let data = payload(3000);
    for part in data.chunks(100) {
        c.write_all(part).await.unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(read_n(&mut s, 3000).await, data);
    let e = t0.elapsed();
    assert!(e >= Duration::from_millis(200), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn bandwidth_cap_spreads_bytes_over_virtual_time() {
    let faults = DirectionFaults {
        bandwidth: Some(1000),
        slice: Some(100),
        ..Default::default()
    };
    let (_p, mut c, mut s) = pair(|u| ProxyConfig::new(u, 3).server_to_client(faults)).await;
    let t0 = Instant::now();
    s.write_all(&payload(5000)).await.unwrap();
    assert_eq!(read_n(&mut c, 5000).await, payload(5000));
    let e = t0.elapsed();
    assert!(e >= Duration::from_millis(4900), "{e:?}");
}

#[tokio::test(start_paused = true)]
async fn slicing_delivers_every_byte_in_order() {
    let faults = DirectionFaults {
        slice: Some(1),
        slice_gap: Duration::from_millis(1),
        ..Default::default()
    };
    let (_p, mut c, mut s) = pair(|u| ProxyConfig::new(u, 4).client_to_server(faults)).await;
    c.write_all(&payload(500)).await.unwrap();
    let mut got = Vec::new();
    let mut reads = 0;
    while got.len() < 500 {
        let mut b = [0u8; 1024];
        let n = s.read(&mut b).await.unwrap();
        got.extend_from_slice(&b[..n]);
        reads += 1;
    }
    assert_eq!(got, payload(500));
    assert!(reads > 100, "slices arrive separately ({reads} reads)");
}

async fn corrupted_copy(seed: u64) -> (Vec<u8>, u64) {
    let faults = DirectionFaults {
        corrupt_probability: 0.05,
        ..Default::default()
    };
    let (p, mut c, mut s) = pair(|u| ProxyConfig::new(u, seed).client_to_server(faults)).await;
    c.write_all(&payload(4000)).await.unwrap();
    (read_n(&mut s, 4000).await, p.bytes_corrupted())
}

#[tokio::test(start_paused = true)]
async fn corruption_replays_exactly_from_the_seed() {
    let (a, na) = corrupted_copy(42).await;
    let (b, nb) = corrupted_copy(42).await;
    let (c, _) = corrupted_copy(43).await;
    assert_eq!(a, b);
    assert_eq!(na, nb);
    assert!(na > 0);
    let differing = a
        .iter()
        .zip(payload(4000))
        .filter(|(x, y)| **x != *y)
        .count();
    assert_eq!(differing as u64, na);
    assert_ne!(a, c);
}

#[tokio::test(start_paused = true)]
async fn stall_after_n_bytes_delivers_exactly_n_and_keeps_the_socket() {
    let faults = DirectionFaults {
        stall_after: Some(10),
        ..Default::default()
    };
    let (_p, mut c, mut s) = pair(|u| ProxyConfig::new(u, 5).client_to_server(faults)).await;
    c.write_all(&payload(50)).await.unwrap();
    assert_eq!(read_n(&mut s, 10).await, payload(10));
    let more = tokio::time::timeout(Duration::from_secs(3600), s.read(&mut [0u8; 8])).await;
    assert!(
        more.is_err(),
        "nothing more arrives and the socket stays open"
    );
    c.write_all(b"still writable").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_after_n_bytes_ends_both_sides_with_eof() {
    let faults = DirectionFaults {
        close_after: Some(7),
        ..Default::default()
    };
    let (_p, mut c, mut s) = pair(|u| ProxyConfig::new(u, 6).server_to_client(faults)).await;
    s.write_all(&payload(100)).await.unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, payload(7));
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).await.unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test(start_paused = true)]
async fn reset_after_n_bytes_resets_the_client() {
    let faults = DirectionFaults {
        reset_after: Some(4),
        ..Default::default()
    };
    let (_p, mut c, mut s) = pair(|u| ProxyConfig::new(u, 7).server_to_client(faults)).await;
    s.write_all(&payload(100)).await.unwrap();
    let mut got = Vec::new();
    let err = loop {
        let mut b = [0u8; 64];
        match c.read(&mut b).await {
            Ok(0) => panic!("expected a reset, got EOF after {got:?}"),
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(got.len() <= 4);
}

#[tokio::test(start_paused = true)]
async fn half_open_swallows_traffic_until_resumed() {
    let (p, mut c, mut s) = pair(|u| ProxyConfig::new(u, 8)).await;
    p.set_half_open(true);
    c.write_all(b"lost").await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(600), s.read(&mut [0u8; 8])).await;
    assert!(r.is_err());
    p.set_half_open(false);
    c.write_all(b"kept").await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, b"kept");
    assert_eq!(p.bytes_forwarded(Direction::ClientToServer), 4);
}

#[tokio::test(start_paused = true)]
async fn a_refused_upstream_closes_the_client() {
    let dead = phobos_test_support::refused_addr().await.unwrap();
    let proxy = FaultProxy::start(ProxyConfig::new(dead, 9)).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut rest = Vec::new();
    let n = c.read_to_end(&mut rest).await.unwrap_or(0);
    assert_eq!(n, 0);
}

async fn delayed_arrival(seed: u64) -> Vec<Duration> {
    use phobos_test_support::proxy::SegmentDelay;
    let delay = SegmentDelay {
        probability: 0.3,
        delay: Duration::from_millis(500),
    };
    let (_p, mut c, mut s) =
        pair(|u| ProxyConfig::new(u, seed).segment_delay(Direction::ClientToServer, delay)).await;
    let t0 = Instant::now();
    let mut arrivals = Vec::new();
    for i in 0..20u8 {
        c.write_all(&[i]).await.unwrap();
        // One byte per segment: wait until the proxy delivered it before writing the next.
        assert_eq!(read_n(&mut s, 1).await, [i]);
        arrivals.push(t0.elapsed());
    }
    arrivals
}

#[tokio::test(start_paused = true)]
async fn segment_delay_holds_back_some_segments_and_replays_from_the_seed() {
    let a = delayed_arrival(11).await;
    let b = delayed_arrival(11).await;
    assert_eq!(a, b, "same seed, same delays");
    let steps: Vec<Duration> = a.windows(2).map(|w| w[1] - w[0]).collect();
    let held = steps
        .iter()
        .filter(|d| **d >= Duration::from_millis(500))
        .count();
    let quick = steps
        .iter()
        .filter(|d| **d < Duration::from_millis(100))
        .count();
    assert!(held >= 1, "some segment was held back: {steps:?}");
    assert!(quick >= 1, "some segment was not: {steps:?}");
    assert_eq!(held + quick, steps.len(), "{steps:?}");
}

#[tokio::test(start_paused = true)]
async fn counts_bytes_read_and_delivered_per_direction() {
    let faults = DirectionFaults {
        stall_after: Some(10),
        ..Default::default()
    };
    let (p, mut c, mut s) = pair(|u| ProxyConfig::new(u, 12).client_to_server(faults)).await;
    c.write_all(&payload(100)).await.unwrap();
    assert_eq!(read_n(&mut s, 10).await, payload(10));
    s.write_all(&payload(30)).await.unwrap();
    assert_eq!(read_n(&mut c, 30).await, payload(30));
    // The stalled direction read everything the client sent but delivered only 10 bytes.
    while p.bytes_read(Direction::ClientToServer) < 100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(p.bytes_read(Direction::ClientToServer), 100);
    assert_eq!(p.bytes_forwarded(Direction::ClientToServer), 10);
    assert_eq!(p.bytes_read(Direction::ServerToClient), 30);
    assert_eq!(p.bytes_forwarded(Direction::ServerToClient), 30);
}

#[tokio::test(start_paused = true)]
async fn listens_where_the_config_says() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let want: std::net::SocketAddr = "127.0.0.2:0".parse().unwrap();
    let proxy =
        FaultProxy::start(ProxyConfig::new(upstream.local_addr().unwrap(), 13).listen(want))
            .await
            .unwrap();
    assert_eq!(proxy.addr().ip(), want.ip());
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut s, _) = upstream.accept().await.unwrap();
    c.write_all(b"x").await.unwrap();
    assert_eq!(read_n(&mut s, 1).await, b"x");
}

#[tokio::test(start_paused = true)]
async fn bandwidth_cap_paces_a_single_large_write() {
    let faults = DirectionFaults {
        bandwidth: Some(10_000),
        ..Default::default()
    };
    let (_p, mut c, mut s) = pair(|u| ProxyConfig::new(u, 14).server_to_client(faults)).await;
    let t0 = Instant::now();
    s.write_all(&payload(10_000)).await.unwrap();
    // After half the time, about half the bytes can have arrived (not all of them).
    let mut got = Vec::new();
    let half = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            let mut b = [0u8; 4096];
            let n = c.read(&mut b).await.unwrap();
            got.extend_from_slice(&b[..n]);
        }
    })
    .await;
    assert!(half.is_err());
    assert!(got.len() < 7_000, "{} bytes in 0.5 s at 10 kB/s", got.len());
    let rest = read_n(&mut c, 10_000 - got.len()).await;
    got.extend_from_slice(&rest);
    assert_eq!(got, payload(10_000));
    assert!(t0.elapsed() >= Duration::from_millis(900));
}

//! `TcpConnector` sets its `SocketOptions` on real loopback sockets, before `connect`.
//!
//! Each test connects to a listener on `127.0.0.1:0` and reads the options back with
//! `getsockopt` (through socket2's `SockRef`).

use std::net::SocketAddr;
use std::time::Duration;

use phobos_plugin_api::IpPort;
use phobos_stn::{
    Connector, Keepalive, SocketOptions, TcpConnector, TlsConfig, TlsConnector, WIFI_MSS,
};
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn connect(options: SocketOptions) -> (TcpStream, TcpStream) {
    let (listener, addr) = listener().await;
    let connector = TcpConnector::with_options(options).unwrap();
    let (client, server) = tokio::join!(connector.connect_tcp(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

#[tokio::test]
async fn default_options_turn_nagle_off_and_leave_keepalive_off() {
    let (client, _server) = connect(SocketOptions::default()).await;
    let sock = SockRef::from(&client);
    assert!(sock.tcp_nodelay().unwrap());
    assert!(!sock.keepalive().unwrap());
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn thin_linear_timeouts_are_on_by_default_and_can_be_turned_off() {
    let (client, _server) = connect(SocketOptions::default()).await;
    assert!(SockRef::from(&client).tcp_thin_linear_timeouts().unwrap());
    let options = SocketOptions::default().thin_linear_timeouts(false);
    let (client, _server) = connect(options).await;
    assert!(!SockRef::from(&client).tcp_thin_linear_timeouts().unwrap());
}

#[tokio::test]
async fn nodelay_can_be_turned_off() {
    let (client, _server) = connect(SocketOptions::default().nodelay(false)).await;
    assert!(!SockRef::from(&client).tcp_nodelay().unwrap());
}

#[tokio::test]
async fn keepalive_timings_are_set() {
    let keepalive = Keepalive::new(Duration::from_secs(45), Duration::from_secs(7), 4);
    let (client, _server) = connect(SocketOptions::default().keepalive(Some(keepalive))).await;
    let sock = SockRef::from(&client);
    assert!(sock.keepalive().unwrap());
    assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(45));
    assert_eq!(
        sock.tcp_keepalive_interval().unwrap(),
        Duration::from_secs(7)
    );
    assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
}

#[tokio::test]
async fn mss_clamp_reaches_the_peer_through_the_syn() {
    // Loopback's MTU (65536) would give an MSS near 65483; the server only sees 1400 or less
    // if the clamp was set before connect, because the MSS travels in the SYN.
    let (client, server) = connect(SocketOptions::default().mss(Some(WIFI_MSS))).await;
    let client_mss = SockRef::from(&client).tcp_mss().unwrap();
    let server_mss = SockRef::from(&server).tcp_mss().unwrap();
    assert!(client_mss <= WIFI_MSS, "client MSS {client_mss}");
    assert!(server_mss <= WIFI_MSS, "server MSS {server_mss}");
    // Without the clamp the peer sees the loopback MSS.
    let (_client, server) = connect(SocketOptions::default()).await;
    let unclamped = SockRef::from(&server).tcp_mss().unwrap();
    assert!(unclamped > WIFI_MSS, "unclamped MSS {unclamped}");
}

#[tokio::test]
async fn the_connector_trait_carries_bytes_over_ipv4_and_ipv6() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let Ok(listener) = TcpListener::bind(bind).await else {
            println!("skipping {bind}: cannot bind (no IPv6 loopback?)");
            continue;
        };
        let addr = listener.local_addr().unwrap();
        let connector: Box<dyn Connector> = Box::new(TcpConnector::new());
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            buf
        });
        let mut client = connector.connect(IpPort::from(addr)).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping");
        let server = server.await.unwrap();
        assert_eq!(&server, b"ping");
    }
}

#[tokio::test]
async fn a_refused_connect_is_an_io_error() {
    // Bound but not listening (and kept so, so no parallel test can take the port): a SYN
    // is answered with a reset, as on a closed port.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = closed.local_addr().unwrap();
    let err = TcpConnector::new().connect_tcp(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn a_tls_connector_over_a_configured_tcp_connector_keeps_its_options() {
    // The server only accepts and reports the MSS it negotiated, then hangs up: the TLS
    // handshake fails, but the TCP connect already carried the clamp.
    let (listener, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        SockRef::from(&stream).tcp_mss().unwrap()
    });
    let tcp = TcpConnector::with_options(SocketOptions::default().mss(Some(WIFI_MSS))).unwrap();
    let tls = TlsConnector::over(
        std::sync::Arc::new(tcp),
        TlsConfig::builder("phobos.test").build().unwrap(),
    );
    assert!(tls.connect(IpPort::from(addr)).await.is_err());
    let server_mss = server.await.unwrap();
    assert!(server_mss <= WIFI_MSS, "server MSS {server_mss}");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_not_sent_low_water_mark_is_set_by_default_and_can_be_left_to_the_kernel() {
    let (client, _server) = connect(SocketOptions::default()).await;
    assert_eq!(
        SockRef::from(&client).tcp_notsent_lowat().unwrap(),
        phobos_stn::NOTSENT_LOWAT
    );
    let (client, _server) = connect(SocketOptions::default().notsent_lowat(None)).await;
    // No setting of the socket's own: it reads back as 0, and the system-wide
    // `net.ipv4.tcp_notsent_lowat` applies (no limit unless set).
    assert_eq!(SockRef::from(&client).tcp_notsent_lowat().unwrap(), 0);
}

#[test]
fn a_zero_not_sent_low_water_mark_is_refused() {
    let options = SocketOptions::default().notsent_lowat(Some(0));
    assert!(TcpConnector::with_options(options).is_err());
}

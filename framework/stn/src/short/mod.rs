//! The short link's IO (spec §8): one HTTP/1.1 POST per attempt over a connection the
//! driver opened itself.
//!
//! The engine decides everything protocol-level: which address (the same ranked plan and
//! connect race as the long link), the request (shaped by the codec), the timeouts and the
//! retries. The driver:
//!
//! 1. connects each attempt through the short-link connector (plain TCP, optionally a
//!    [`ProxyConnector`], optionally TLS over either), or runs the exchange on an idle
//!    keep-alive connection the engine chose to reuse;
//! 2. runs the exchange with `hyper`'s connection-level HTTP/1.1 client
//!    ([`exchange::H1Conn`]), reporting every read to the engine (its first-packet and
//!    packet-to-packet timers count any response byte) and the complete response or a typed
//!    [`ExchangeError`](phobos_stn_proto::ExchangeError) at the end;
//! 3. holds a connection whose response was reusable until the engine reuses or aborts it
//!    (the engine's keep-alive pool decides, §8.5), and tells the engine when the server
//!    closes such an idle connection. Before writing a request into an idle connection it
//!    checks that the server has not closed it meanwhile (a [`PeerProbe`] peek at the
//!    socket, as Mars does), and reports
//!    [`ExchangeError::NotSent`](phobos_stn_proto::ExchangeError::NotSent) without writing
//!    when it has: the engine then goes on with a fresh connection.
//!
//! [`PeerProbe`]: crate::PeerProbe

pub(crate) mod exchange;
pub(crate) mod proxy;
pub(crate) mod runner;

use std::fmt;
use std::sync::Arc;

pub use proxy::{Proxy, ProxyAuth, ProxyConnector, ProxyError};

use crate::connector::{Connector, TcpConnector};
use crate::{TlsConfig, TlsConnector};

/// The driver-side short-link settings of a [`ClientConfig`](crate::ClientConfig).
#[derive(Clone)]
pub(crate) struct ShortSettings {
    /// Reaches the server (or the proxy).
    pub(crate) base: Arc<dyn Connector>,
    pub(crate) proxy: Option<Proxy>,
    pub(crate) tls: Option<TlsConfig>,
}

impl Default for ShortSettings {
    fn default() -> Self {
        ShortSettings {
            base: Arc::new(TcpConnector::new()),
            proxy: None,
            tls: None,
        }
    }
}

impl ShortSettings {
    /// The connector chain: base, then the proxy tunnel, then TLS end to end.
    pub(crate) fn connector(&self) -> Arc<dyn Connector> {
        self.connector_with(true)
    }

    /// The chain with or without the proxy (the engine may try one attempt without it).
    pub(crate) fn connector_with(&self, use_proxy: bool) -> Arc<dyn Connector> {
        let mut c = self.base.clone();
        if let Some(proxy) = self.proxy.as_ref().filter(|_| use_proxy) {
            c = Arc::new(ProxyConnector::over(c, proxy.clone()));
        }
        if let Some(tls) = &self.tls {
            c = Arc::new(TlsConnector::over(c, tls.clone()));
        }
        c
    }
}

impl fmt::Debug for ShortSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShortSettings")
            .field("proxy", &self.proxy)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Entry points for the fuzz targets in `tests/fuzz` (and their proptest replay). Not a
/// stable API.
pub mod fuzzing {
    use bytes::Bytes;
    use phobos_stn_proto::{ExchangeError, HttpRequest, HttpResponse};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::exchange::{H1Conn, Limits};

    /// Runs the response side of one short-link exchange with `data` as everything the
    /// server sends (then the server closes), in a current-thread runtime. Never panics,
    /// never hangs: any input ends in a response or a typed error.
    pub fn short_response(data: &[u8]) {
        if let Some(Ok(response)) = exchange_with(data) {
            assert!(response.body.len() <= LIMITS.max_body);
        }
    }

    /// [`short_response`]'s exchange, with its outcome (`None` only if no runtime could be
    /// built or the HTTP handshake failed).
    pub fn exchange_with(data: &[u8]) -> Option<Result<HttpResponse, ExchangeError>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let data = data.to_vec();
        rt.block_on(async move {
            let (client, mut server) = tokio::io::duplex(16 * 1024);
            tokio::spawn(async move {
                // Read the request first, as a server does: answering before the request is
                // read would race the client's write against the close.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match server.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = server.write_all(&data).await;
                let _ = server.shutdown().await;
                // Keep the read side open until the client is done.
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut server, &mut sink).await;
            });
            let mut conn = H1Conn::handshake(Box::new(client), None, LIMITS)
                .await
                .ok()?;
            let req = HttpRequest {
                path: "/fuzz".to_owned(),
                headers: vec![("Content-Length".to_owned(), "1".to_owned())],
                body: Bytes::from_static(b"x"),
            };
            Some(conn.exchange(&req, LIMITS, Box::new(|_| {})).await)
        })
    }

    const LIMITS: Limits = Limits {
        max_head: 16 * 1024,
        max_body: 64 * 1024,
    };

    #[cfg(test)]
    mod tests {
        use super::{exchange_with, short_response};

        #[test]
        fn the_fuzz_entry_reaches_the_response_parser() {
            // A fuzz target that never got past the handshake would find nothing: make sure
            // good and bad answers both get parsed.
            let ok = exchange_with(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
                .expect("exchange ran")
                .expect("a response");
            assert_eq!((ok.status, &ok.body[..]), (200, &b"x"[..]));
            let bad = exchange_with(b"zzzz").expect("exchange ran");
            assert!(bad.is_err(), "{bad:?}");
        }

        #[test]
        fn odd_responses_end_as_http_says() {
            let ok = |input: &[u8], body: &[u8]| {
                let r = exchange_with(input)
                    .expect("exchange ran")
                    .unwrap_or_else(|e| panic!("{:?}: {e:?}", String::from_utf8_lossy(input)));
                assert_eq!((r.status, &r.body[..]), (200, body), "{input:?}");
            };
            let err = |input: &[u8]| {
                let r = exchange_with(input).expect("exchange ran");
                assert!(r.is_err(), "{:?}: {r:?}", String::from_utf8_lossy(input));
            };
            // Nothing, or no HTTP at all.
            err(b"");
            err(b"\0\0\0\0\xff\xfe");
            // No length: the body runs to the close (RFC 9112 §6.3, 8.).
            ok(b"HTTP/1.1 200 OK\r\n\r\n", b"");
            ok(
                b"HTTP/1.0 200 OK\r\n\r\nclose-delimited body",
                b"close-delimited body",
            );
            // An interim response, then the final one.
            ok(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
                b"x",
            );
            // A length past any integer, lengths that disagree (§6.3, 5.), a chunk that
            // never comes: errors, not a truncated or invented body.
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n");
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx");
            err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n");
            // A body longer than the limit.
            let mut big = b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n".to_vec();
            big.resize(big.len() + 70_000, b'x');
            err(&big);
            for input in [&b""[..], b"HTTP/1.1 200 OK\r\n\r\n", &big] {
                short_response(input);
            }
        }
    }
}

//! Short-link requests: one HTTP/1.1 `POST` per request.
//!
//! Interim: until `phobos-stn` runs short-link tasks, this posts with hyper directly, over a
//! fresh TCP connection per request (Mars's short-link shape: `Connection: close`,
//! `application/octet-stream`).

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;
use phobos_stn::Client;
use tokio::net::TcpStream;

use crate::chat::ChatError;

/// Posts `body` to `path` on `addr` and returns the response body of a `200`.
pub(crate) async fn post(
    _stn: &Client,
    addr: SocketAddr,
    path: &str,
    body: Bytes,
) -> Result<Bytes, ChatError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| ChatError::ShortLink(format!("{what}: {e}"));
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| fail(&format!("connecting to {addr}"), &e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail("HTTP handshake", &e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::post(path)
        .header("Host", addr.to_string())
        .header("Content-Type", "application/octet-stream")
        .header("Connection", "close")
        .body(Full::new(body))
        .map_err(|e| fail("building the request", &e))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| fail("sending the request", &e))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| fail("reading the response", &*e))?
        .to_bytes();
    if !status.is_success() {
        return Err(ChatError::ShortLink(format!("HTTP status {status}")));
    }
    Ok(body)
}

const MAX_RESPONSE: usize = 4 * 1024 * 1024;

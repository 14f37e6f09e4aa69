//! The short link (spec §8): one HTTP/1.1 POST per attempt.
//!
//! This file holds the plain types the core and the driver exchange about a short-link
//! attempt.

use bytes::Bytes;

use crate::error::HttpFailure;
use crate::io::CloseCause;

/// A short-link request, shaped by the codec's
/// [`shortlink_headers`](phobos_plugin_api::PacketCodec::shortlink_headers) and
/// [`shortlink_body`](phobos_plugin_api::PacketCodec::shortlink_body) hooks. The driver
/// writes it as `POST <path> HTTP/1.1`, the headers in this order, then the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// The request target (Mars's `cgi`), e.g. `/cgi-bin/x`.
    pub path: String,
    /// Header names and values, in the order they are written.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl HttpRequest {
    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// A complete short-link response, as the driver read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in the order received.
    pub headers: Vec<(String, String)>,
    /// The whole body (content length or chunked, de-chunked).
    pub body: Bytes,
}

impl HttpResponse {
    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// Why the driver could not get a complete response on a short-link connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The bytes received are not a valid HTTP/1.x response.
    #[error("{0}")]
    Http(HttpFailure),
    /// The connection closed or failed before the response was complete.
    #[error("connection ended: {0:?}")]
    Closed(CloseCause),
    /// The request could not be written as given (the codec's headers are not valid
    /// HTTP, or its `Content-Length` does not match the body).
    #[error("request not writable")]
    Request,
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
